"""The Legacy Surveys viewer's colour mapping (its ``sdss_rgb`` style).

The viewer turns per-band fluxes in nanomaggies into an 8-bit RGB JPEG with
an asinh stretch.  The bundled models were trained on images made this way,
so every image source (JPEG service, FITS service, local FITS files, the
simulator) goes through the same mapping before it reaches the model.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["ColourMapping", "asinh_rgb", "DES_MAPPING", "HSC_MAPPING"]


@dataclass(frozen=True)
class ColourMapping:
    """How the viewer maps band images to RGB.

    Attributes
    ----------
    channel_bands : tuple of str
        Band shown in the red, green and blue channel, in that order.
    scales : tuple of float
        Multiplicative scale per channel (red, green, blue), applied to
        fluxes in nanomaggies.
    flux_divisor : float
        Images are divided by this first to convert them to nanomaggies
        (63.1 for HSC coadds with zero point 27; 1 for DES/DR9 images).
    q : float
        Asinh softening parameter.
    m : float
        Additive offset before the stretch (a floor that lifts the sky).
    """

    channel_bands: tuple
    scales: tuple
    flux_divisor: float = 1.0
    q: float = 20.0
    m: float = 0.03


# Scales from the viewer's source (see docs/surveys.rst): g->blue, r->green,
# z->red.  HSC uses its own, larger scales; the viewer's HSC JPEGs use g,r,z.
DES_MAPPING = ColourMapping(channel_bands=("z", "r", "g"), scales=(2.2, 3.4, 6.0))
HSC_MAPPING = ColourMapping(
    channel_bands=("z", "r", "g"), scales=(11.0, 17.0, 30.0), flux_divisor=63.1
)


def asinh_rgb(channels, mapping):
    """Apply the viewer's asinh colour mapping.

    Parameters
    ----------
    channels : array_like, shape (3, ny, nx)
        Band images in the order of ``mapping.channel_bands`` (red, green,
        blue), in the survey's native flux units.
    mapping : ColourMapping
        Scales and stretch parameters.

    Returns
    -------
    rgb : numpy.ndarray, shape (ny, nx, 3), float32
        Image in [0, 1].  Quantise with ``np.round(rgb * 255)`` to get what
        the JPEG service encodes.
    """
    channels = np.asarray(channels, dtype=np.float64) / mapping.flux_divisor
    if channels.ndim != 3 or channels.shape[0] != 3:
        raise ValueError(f"expected 3 band images, got array of shape {channels.shape}")
    scales = np.asarray(mapping.scales, dtype=np.float64)[:, None, None]
    x = np.maximum(0.0, channels * scales + mapping.m)
    intensity = x.mean(axis=0)
    # Where the summed intensity is zero every channel is zero too; avoid 0/0.
    safe = np.where(intensity > 0, intensity, 1.0)
    fac = np.arcsinh(mapping.q * safe) / np.sqrt(mapping.q) / safe
    rgb = np.clip(x * fac, 0.0, 1.0)
    rgb = np.where(intensity > 0, rgb, 0.0)
    return np.moveaxis(rgb, 0, -1).astype(np.float32)
