"""Turn cutout payloads into DeepShadows model inputs.

The paper's images are the Legacy Surveys viewer's 256×256 JPEGs resized to
64×64 with PIL (``Image.resize``: bicubic, anti-aliased for shrinking) and
divided by 255.  Every payload goes through exactly that resize: JPEGs as
decoded, FITS payloads (per-band fluxes) after the viewer's asinh colour
mapping quantised to 8 bits, so a model sees the same thing whichever service
the pixels came from, in training and in scoring alike.
"""

import hashlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import status
from ..colour import asinh_rgb
from ..surveys.payload import UnreadablePayload, decode_rgb, is_blank, read_fits_image

__all__ = [
    "MODEL_IMAGE_SIZE",
    "MAX_CUTOUT_PIXELS",
    "RESIZE_FILTER",
    "BadImageError",
    "BlankImageError",
    "decode_image_uint8",
    "jpeg_to_rgb",
    "fits_to_rgb",
    "payload_to_uint8",
    "payload_to_rgb",
    "resize_uint8",
    "to_model_input",
    "prepare_payload",
    "prepare_payload_uint8",
    "model_input_tag",
    "MODEL_INPUT_VERSION",
    "as_uint8",
]

#: Side of the model's input images (pixels).
MODEL_IMAGE_SIZE = 64

# Smallest cutout we accept; anything smaller is a broken or wrong answer.
MIN_CUTOUT_PIXELS = 32

#: Most pixels a cutout may declare (width × height).  The viewer serves at
#: most 512² (larger requests are clipped); 2048² leaves room for other
#: services while a decompression bomb is refused before it is decoded.
MAX_CUTOUT_PIXELS = 2048 * 2048

#: Pillow's filter for the 256 -> 64 resize: the default of ``Image.resize``
#: for RGB images, which the paper used.
RESIZE_FILTER = Image.Resampling.BICUBIC


#: Version of the payload -> model input recipe; raise it whenever
#: :func:`prepare_payload_uint8` would give other pixels for the same payload,
#: so that model inputs remembered in a cache are made again.
MODEL_INPUT_VERSION = 1


class BadImageError(ValueError):
    """A payload could not be decoded into a usable cutout."""


class BlankImageError(ValueError):
    """A payload decoded to a blank image (position outside the footprint)."""


def decode_image_uint8(data):
    """Decode a JPEG (or PNG) cutout to 8-bit RGB, refusing bombs.

    Parameters
    ----------
    data : bytes
        The encoded image.

    Returns
    -------
    rgb : numpy.ndarray, shape (ny, nx, 3), uint8
    """
    try:
        rgb = decode_rgb(data, max_pixels=MAX_CUTOUT_PIXELS)
    except UnreadablePayload as exc:
        raise BadImageError(str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise BadImageError(f"not a decodable image: {exc}") from exc
    return rgb


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
    return decode_image_uint8(data).astype(np.float32) / 255.0


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
        cube, _ = read_fits_image(data, dtype=np.float64)
    except UnreadablePayload as exc:
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


def payload_to_uint8(payload, mapping):
    """Decode a :class:`~lsbg_classify.surveys.Payload` to 8-bit RGB.

    Raises
    ------
    BadImageError
        Undecodable, too small or too large.
    BlankImageError
        Constant image (outside the survey footprint).
    """
    if payload.format == "fits":
        rgb = np.round(fits_to_rgb(payload.data, mapping) * 255.0).astype(np.uint8)
    else:
        rgb = decode_image_uint8(payload.data)
    if min(rgb.shape[:2]) < MIN_CUTOUT_PIXELS:
        raise BadImageError(f"cutout of {rgb.shape[1]}×{rgb.shape[0]} pixels is too small")
    if is_blank(rgb):
        raise BlankImageError("cutout is blank (constant)")
    return rgb


def payload_to_rgb(payload, mapping):
    """Decode a :class:`~lsbg_classify.surveys.Payload` to RGB in [0, 1]."""
    return payload_to_uint8(payload, mapping).astype(np.float32) / 255.0


def resize_uint8(rgb, size=MODEL_IMAGE_SIZE):
    """The paper's resize of an 8-bit cutout: PIL bicubic, anti-aliased.

    Parameters
    ----------
    rgb : numpy.ndarray, shape (ny, nx, 3), uint8
    size : int
        Output side in pixels.

    Returns
    -------
    image : numpy.ndarray, shape (size, size, 3), uint8
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.shape[:2] == (size, size):
        return rgb
    return np.asarray(Image.fromarray(rgb, "RGB").resize((size, size), RESIZE_FILTER))


def to_model_input(rgb, size=MODEL_IMAGE_SIZE):
    """Resample an RGB cutout to the model's input, the paper's way.

    Parameters
    ----------
    rgb : array_like, shape (ny, nx, 3)
        Image in [0, 1] (quantised to 8 bits first, as a JPEG would be)
        or uint8.
    size : int
        Output side in pixels.

    Returns
    -------
    image : numpy.ndarray, shape (size, size, 3), float32
        Values in [0, 1], multiples of 1/255.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        rgb = as_uint8(rgb)
    return resize_uint8(rgb, size).astype(np.float32) / 255.0


def model_input_tag(mapping, size=MODEL_IMAGE_SIZE):
    """A short name for the recipe that turns payloads into model inputs.

    Two calls give the same tag exactly when :func:`prepare_payload_uint8`
    would make the same pixels of any payload: it changes with
    :data:`MODEL_INPUT_VERSION`, the size, the resize filter and the colour
    mapping (which FITS payloads go through).  The cache files model inputs
    under it (:meth:`~lsbg_classify.pipeline.cache.CutoutCache.get_model_input`).
    """
    recipe = f"{MODEL_INPUT_VERSION}|{size}|{RESIZE_FILTER!r}|{mapping!r}"
    return f"v{MODEL_INPUT_VERSION}-{size}-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"


def prepare_payload_uint8(payload, mapping, size=MODEL_IMAGE_SIZE):
    """Decode and resample one payload to 8 bits, reporting problems as a status.

    Returns
    -------
    image : numpy.ndarray or None
        (size, size, 3) uint8 model input (the model divides by 255), or
        None when unusable.
    row_status : str
        ``"ok"``, ``"no_coverage"`` (blank cutout) or ``"bad_image"``.
    message : str
        Why the image is unusable, empty when ``row_status == "ok"``.
    """
    try:
        return resize_uint8(payload_to_uint8(payload, mapping), size), status.OK, ""
    except BlankImageError as exc:
        return None, status.NO_COVERAGE, str(exc)
    except BadImageError as exc:
        return None, status.BAD_IMAGE, str(exc)


def prepare_payload(payload, mapping, size=MODEL_IMAGE_SIZE):
    """:func:`prepare_payload_uint8`, as float32 in [0, 1] (the model's input)."""
    image, row_status, message = prepare_payload_uint8(payload, mapping, size)
    return (None if image is None else image.astype(np.float32) / 255.0), row_status, message


def as_uint8(images):
    """Store model inputs compactly: [0, 1] floats to 8-bit integers."""
    return np.round(np.clip(np.asarray(images), 0.0, 1.0) * 255.0).astype(np.uint8)
