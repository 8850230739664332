"""Turn cutout payloads into DeepShadows model inputs.

The paper's images are the Legacy Surveys viewer's 256×256 JPEGs resized to
64×64 and divided by 255.  FITS payloads (per-band fluxes) are mapped to the
same kind of image with the viewer's asinh colour mapping and quantised to
8 bits, so a model sees the same thing whichever service the pixels came
from.
"""

import io

import numpy as np
from astropy.io import fits
from PIL import Image, UnidentifiedImageError
from skimage.transform import resize

from . import status
from .colour import asinh_rgb

__all__ = [
    "MODEL_IMAGE_SIZE",
    "BadImageError",
    "BlankImageError",
    "jpeg_to_rgb",
    "fits_to_rgb",
    "payload_to_rgb",
    "to_model_input",
    "prepare_payload",
    "as_uint8",
]

#: Side of the model's input images (pixels).
MODEL_IMAGE_SIZE = 64

# A cutout whose pixels all lie within this many 8-bit levels of each other
# carries no sky: the viewer serves such blank images outside its footprint.
BLANK_RANGE_LEVELS = 1

# Smallest cutout we accept; anything smaller is a broken or wrong answer.
MIN_CUTOUT_PIXELS = 32


class BadImageError(ValueError):
    """A payload could not be decoded into a usable cutout."""


class BlankImageError(ValueError):
    """A payload decoded to a blank image (position outside the footprint)."""


def jpeg_to_rgb(data):
    """Decode a JPEG (or PNG) cutout.

    Parameters
    ----------
    data : bytes
        The encoded image.

    Returns
    -------
    rgb : numpy.ndarray, shape (ny, nx, 3), float32
        Pixel values in [0, 1].
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"not a decodable image: {exc}") from exc
    return rgb


def fits_to_rgb(data, mapping):
    """Map a FITS cube of band images to an 8-bit-quantised RGB image.

    Parameters
    ----------
    data : bytes
        FITS file whose primary HDU holds a (3, ny, nx) cube, bands bluest
        first, in the survey's native flux units, first row at the south
        edge (the FITS convention, north up).
    mapping : lsbg_classify.colour.ColourMapping
        The viewer's colour mapping for the survey.

    Returns
    -------
    rgb : numpy.ndarray, shape (ny, nx, 3), float32
        Pixel values in [0, 1], on the 1/255 grid a JPEG would give.
    """
    try:
        with fits.open(io.BytesIO(data)) as hdul:
            cube = np.array(hdul[0].data, dtype=np.float64)
    except (OSError, TypeError, ValueError, IndexError) as exc:
        raise BadImageError(f"not a readable FITS cube: {exc}") from exc
    if cube.ndim != 3 or cube.shape[0] != 3:
        raise BadImageError(f"expected a (3, ny, nx) FITS cube, got shape {cube.shape}")
    finite = np.isfinite(cube)
    if not finite.any() or np.all(cube[finite] == 0):
        raise BlankImageError("FITS cutout holds no data")
    # Bands come bluest first; the mapping wants red, green, blue.  FITS
    # rows run south to north, image rows top (north) to bottom: flip them
    # so FITS and JPEG cutouts of one position are the same picture.
    rgb = asinh_rgb(np.where(finite, cube, 0.0)[::-1, ::-1, :], mapping)
    return np.round(rgb * 255.0).astype(np.float32) / 255.0


def payload_to_rgb(payload, mapping):
    """Decode a :class:`~lsbg_classify.surveys.Payload` to RGB in [0, 1]."""
    if payload.format == "fits":
        rgb = fits_to_rgb(payload.data, mapping)
    else:
        rgb = jpeg_to_rgb(payload.data)
    if min(rgb.shape[:2]) < MIN_CUTOUT_PIXELS:
        raise BadImageError(f"cutout of {rgb.shape[1]}×{rgb.shape[0]} pixels is too small")
    if np.ptp(rgb) * 255.0 <= BLANK_RANGE_LEVELS:
        raise BlankImageError("cutout is blank (constant)")
    return rgb


def to_model_input(rgb, size=MODEL_IMAGE_SIZE):
    """Resample an RGB cutout to the model's input size.

    Parameters
    ----------
    rgb : array_like, shape (ny, nx, 3)
        Image in [0, 1].
    size : int
        Output side in pixels.

    Returns
    -------
    image : numpy.ndarray, shape (size, size, 3), float32
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[:2] == (size, size):
        return rgb
    # Anti-aliasing low-passes before decimation so stars and noise are not
    # aliased into spurious structure (256 -> 64 is a factor 4).
    out = resize(rgb, (size, size, 3), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def prepare_payload(payload, mapping, size=MODEL_IMAGE_SIZE):
    """Decode and resample one payload, reporting problems as a status.

    Returns
    -------
    image : numpy.ndarray or None
        (size, size, 3) float32 model input, or None when unusable.
    row_status : str
        ``"ok"``, ``"no_coverage"`` (blank cutout) or ``"bad_image"``.
    message : str
        Why the image is unusable, empty when ``row_status == "ok"``.
    """
    try:
        return to_model_input(payload_to_rgb(payload, mapping), size), status.OK, ""
    except BlankImageError as exc:
        return None, status.NO_COVERAGE, str(exc)
    except BadImageError as exc:
        return None, status.BAD_IMAGE, str(exc)


def as_uint8(images):
    """Store model inputs compactly: [0, 1] floats to 8-bit integers."""
    return np.round(np.clip(np.asarray(images), 0.0, 1.0) * 255.0).astype(np.uint8)
