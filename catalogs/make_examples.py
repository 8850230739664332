"""Write the small example candidate catalogs of this folder.

The rows are made up: positions drawn at random (fixed seed) inside regions
well within the DES wide-field and HSC-SSP Wide footprints, and structural
parameters drawn from ranges typical of low-surface-brightness galaxies.
They are *not* real detections; they exist to try the command line and the
catalog reader on files that look like real candidate lists.

Run from anywhere::

    python catalogs/make_examples.py

The output is deterministic: running it again rewrites identical files.
"""

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import MaskedColumn, Table

from lsbg_classify.pipeline.catalog.write import write_catalog

HERE = Path(__file__).resolve().parent
N_ROWS = 20

# (RA min, RA max, Dec min, Dec max) in degrees, kept away from footprint edges.
DES_REGIONS = [
    (15.0, 45.0, -55.0, -42.0),     # south of the DES "bridge", SPT area
    (50.0, 75.0, -60.0, -46.0),
    (318.0, 350.0, -60.0, -46.0),
]
HSC_REGIONS = [
    (132.0, 146.0, 0.0, 3.0),       # GAMA09H
    (177.0, 186.0, -1.0, 1.0),      # WIDE12H
    (213.0, 222.0, -1.0, 1.0),      # GAMA15H
    (32.0, 37.0, -5.5, -3.0),       # XMM-LSS
]


def _positions(rng, regions, n):
    """Uniform-on-the-sphere positions spread over ``regions``."""
    pick = rng.integers(len(regions), size=n)
    box = np.array(regions)[pick]
    ra = rng.uniform(box[:, 0], box[:, 1])
    sin_dec = rng.uniform(np.sin(np.radians(box[:, 2])), np.sin(np.radians(box[:, 3])))
    return np.round(ra, 6), np.round(np.degrees(np.arcsin(sin_dec)), 6)


def _candidates(survey, seed, ra_name, dec_name, regions):
    rng = np.random.default_rng(seed)
    ra, dec = _positions(rng, regions, N_ROWS)
    table = Table(meta={
        "survey": survey,
        "note": "made-up example candidates written by catalogs/make_examples.py",
        "frame": "icrs",
    })
    table["id"] = [f"{survey.upper()}-EX{i:03d}" for i in range(N_ROWS)]
    table[ra_name] = MaskedColumn(ra, unit=u.deg, description="Right ascension (ICRS)")
    table[dec_name] = MaskedColumn(dec, unit=u.deg, description="Declination (ICRS)")
    table["mu_0_g"] = MaskedColumn(
        np.round(rng.uniform(24.0, 27.0, N_ROWS), 2), unit=u.mag / u.arcsec**2,
        description="Central g-band surface brightness",
    )
    r_eff = MaskedColumn(
        np.round(rng.uniform(2.5, 12.0, N_ROWS), 2), unit=u.arcsec,
        description="Effective radius (masked where the fit failed)",
    )
    r_eff.mask[[3, 11]] = True
    table["r_eff"] = r_eff
    table["g_i"] = MaskedColumn(np.round(rng.uniform(0.3, 1.1, N_ROWS), 3), unit=u.mag,
                                description="g - i colour")
    table["ell"] = MaskedColumn(np.round(rng.uniform(0.0, 0.6, N_ROWS), 3),
                                description="Ellipticity 1 - b/a")
    return table


def main():
    des = _candidates("des", 20210101, "ra", "dec", DES_REGIONS)
    write_catalog(des, HERE / "example_des.fits", overwrite=True)
    write_catalog(des, HERE / "example_des.csv", overwrite=True)
    hsc = _candidates("hsc", 20180404, "RAJ2000", "DEJ2000", HSC_REGIONS)
    write_catalog(hsc, HERE / "example_hsc.ecsv", overwrite=True)
    for name in ("example_des.fits", "example_des.csv", "example_hsc.ecsv"):
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
