"""Read untrusted cutout payloads: JPEG/PNG and FITS bytes from a service or a cache.

One reader for every place that opens a payload (the HTTP backends that
check an answer, the preprocessing that turns it into a model input), so
that all of them refuse the same files in the same way and agree on which
image carries no sky.
"""

import io

import numpy as np

__all__ = ["UnreadablePayload", "decode_rgb", "read_fits_image", "is_blank",
           "BLANK_RANGE_LEVELS"]

#: Largest peak-to-peak range (8-bit levels) of an image that carries no sky.
#: The viewer serves constant images outside its footprint, and JPEG
#: rounding wobbles a flat image by one level either way.
BLANK_RANGE_LEVELS = 2


class UnreadablePayload(ValueError):
    """Bytes that are not a usable image."""


def decode_rgb(data, max_pixels=None):
    """Decode a JPEG (or PNG) to 8-bit RGB, completely.

    Parameters
    ----------
    data : bytes
        The encoded image.
    max_pixels : int, optional
        Most pixels (width × height) the image may declare; checked before
        decoding, so that a decompression bomb is never expanded.

    Returns
    -------
    rgb : numpy.ndarray, shape (ny, nx, 3), uint8

    Raises
    ------
    UnreadablePayload
        The image declares more than ``max_pixels`` pixels.
    OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError
        Pillow's own errors for damaged (e.g. truncated) or unknown files:
        callers tell a transfer problem from a final one by their type.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise UnreadablePayload(f"image declares {width}×{height} pixels, more than the "
                                    f"{max_pixels} a cutout may have")
        img.load()  # forces a full decode: truncated files fail here
        return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def read_fits_image(data, dtype=np.float32):
    """The first image of a FITS file, with its header.

    Parameters
    ----------
    data : bytes
        The FITS file.
    dtype : numpy.dtype
        Type of the returned pixels.

    Returns
    -------
    image : numpy.ndarray
        Data of the first HDU holding an array of two dimensions or more.
    header : astropy.io.fits.Header
        A copy of that HDU's header.

    Raises
    ------
    UnreadablePayload
        The bytes cannot be parsed, or no HDU holds an image.
    """
    from astropy.io import fits

    try:
        with fits.open(io.BytesIO(data), memmap=False) as hdul:
            hdu = next((h for h in hdul if h.data is not None and h.data.ndim >= 2), None)
            if hdu is None:
                raise UnreadablePayload("FITS answer holds no image")
            return np.asarray(hdu.data, dtype=dtype), hdu.header.copy()
    except UnreadablePayload:
        raise
    except Exception as exc:  # untrusted bytes: any parser failure means unusable
        raise UnreadablePayload(f"FITS answer cannot be read: {exc}") from exc


def is_blank(rgb, tolerance=BLANK_RANGE_LEVELS):
    """Whether an 8-bit image is constant (no sky), up to ``tolerance`` levels.

    Parameters
    ----------
    rgb : numpy.ndarray
        Decoded image, 8-bit levels.
    tolerance : int
        Largest peak-to-peak range still counted as constant.
    """
    return int(rgb.max()) - int(rgb.min()) <= tolerance
