"""``lsbg-classify demo``: the whole pipeline offline on the simulated sky.

It makes a candidate catalog at random positions in the DES (or HSC)
footprint, classifies it with the bundled model through the same code as
``classify_catalog`` (backend, cache, preprocessing, model), writes the
scored table and a contact sheet, and compares the classes with the
simulator's truth.
"""

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table

from .. import status
from ..figures import contact_sheet
from ..pipeline.catalog.write import write_catalog
from ..pipeline.classify import classify_catalog
from ..pipeline.scoring import fetch_images
from ..surveys import get_backend
from .conditions import truth_label

__all__ = ["demo_catalog", "run_demo", "DEFAULT_ROWS"]

#: Candidates the demo simulates unless told.
DEFAULT_ROWS = 48

# Rough sky boxes inside each survey's footprint, (RA min, RA max, Dec min, Dec max) in degrees.
FOOTPRINT_BOXES = {"des": (0.0, 60.0, -60.0, -40.0), "hsc": (130.0, 225.0, -1.5, 4.5)}


def demo_catalog(n_rows=DEFAULT_ROWS, survey="des", seed=0):
    """A candidate catalog like a source finder's, at random positions.

    Returns
    -------
    `~astropy.table.Table`
        Columns ``id``, ``ra``, ``dec`` (deg) and ``true_label`` from the
        simulated sky (1 = LSBG), which a real catalog would not have.
    """
    rng = np.random.default_rng(seed)
    ra_min, ra_max, dec_min, dec_max = FOOTPRINT_BOXES[survey]
    ra = rng.uniform(ra_min, ra_max, n_rows)
    # Uniform on the sphere within the Dec band.
    sin_dec = rng.uniform(np.sin(np.radians(dec_min)), np.sin(np.radians(dec_max)), n_rows)
    dec = np.degrees(np.arcsin(sin_dec))
    table = Table()
    table["id"] = np.arange(1, n_rows + 1)
    table["ra"] = np.round(ra, 6) * u.deg
    table["dec"] = np.round(dec, 6) * u.deg
    table["true_label"] = np.array([truth_label(r, d, seed) for r, d in zip(ra, dec)], np.int8)
    table.meta["ORIGIN"] = f"lsbg-classify demo, simulated {survey.upper()} sky, seed {seed}"
    return table


def run_demo(output_dir="lsbg_demo_output", n_rows=DEFAULT_ROWS, survey="des", seed=0, progress=None):
    """Run the demo and write its outputs into ``output_dir``.

    Returns
    -------
    `~astropy.table.Table`
        The scored catalog.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    candidates = demo_catalog(n_rows, survey, seed)
    write_catalog(candidates, out / "candidates.fits", overwrite=True)
    cache = out / "cache"
    backend = get_backend("simulated", survey=survey, seed=seed)
    scored = classify_catalog(candidates, survey=survey, backend=backend, cache=cache,
                              progress=progress)
    write_catalog(scored, out / "scored.fits", overwrite=True)
    # The cutouts come from the cache the classification just filled.
    images = fetch_images(scored["ra"], scored["dec"], backend, cache=cache, progress=False).images
    prob = np.asarray(scored["lsbg_prob"].filled(np.nan))
    captions = [f"#{i} p={p:.2f}" for i, p in zip(scored["id"], prob)]
    contact_sheet(images, out / "contact_sheet.png", captions=captions,
                  labels=np.asarray(scored["true_label"]),
                  title=f"lsbg-classify demo ({survey.upper()}, simulated sky): frame = true class "
                        "(green LSBG, red artifact), p = LSBG probability")
    ok = np.asarray(scored["lsbg_status"]) == status.OK
    correct = np.asarray(scored["lsbg_class"])[ok] == np.asarray(scored["true_label"])[ok]
    print(f"classified {len(scored)} simulated candidates with the bundled {survey!r} model: "
          f"{int(np.sum(scored['lsbg_class'][ok]))} called LSBG; agreement with the simulator's "
          f"truth {correct.mean():.2f} ({correct.sum()}/{ok.sum()})")
    print(f"wrote {out / 'scored.fits'}, {out / 'contact_sheet.png'} (cutout cache: {cache})")
    return scored
