"""A synthetic DES / HSC sky for training and offline tests.

The bundled CNN is trained on cutouts made here and applied to real cutouts
from the Legacy Surveys viewer, so the simulator mirrors the real image chain
step by step:

1. A scene is drawn on the survey's *native* pixel grid (DES 0.262"/px,
   HSC 0.168"/px): the candidate at the centre (a low-surface-brightness
   galaxy or one of the DES "hard" artifacts), field stars and galaxies with
   realistic number counts, sizes and colours.  Profiles come from GalSim,
   drawn before the PSF; the whole scene is then convolved with a per-band
   Moffat PSF (also from GalSim) by FFT.
2. Bright stars get extended wings, diffraction spikes, saturated cores and
   bleed trails; ghosts, scattered light and Galactic cirrus are added where
   the scene calls for them.
3. The viewer resamples the coadd to the cutout pixel scale (0.131"/px for
   ``zoom=15``, half the native scale); we do the same with band-limited
   (Fourier) interpolation, and bilinear interpolation for the sharp-edged
   detector effects.
4. Sky noise at the survey depth (white per native pixel, resampled the
   same way) and a small residual sky level are added.
5. :func:`lsbg_classify.colour.asinh_rgb` maps the bands to RGB, which is
   quantised to 8 bits and JPEG-compressed with Pillow (quality 90).

Calibration against real cutouts (:mod:`lsbg_classify.diagnostics.sim_vs_real`, the
real des_real_10 and des_dev_119 sets) fixed three empirical constants:
the noise level (``_NOISE_CALIBRATION``), a residual sky offset per band
(``_SKY_OFFSET``) and an overall source brightness against the stretch
(``_FLUX_SCALE`` = 2, i.e. sources 0.75 mag brighter than catalogue
nanomaggies would give).  It also showed that the real 64x64 reference
cutouts have nearly white noise at 64 px, as the paper's PIL bicubic resize
gives (a Gaussian anti-aliasing filter would correlate neighbours);
:func:`make_training_set` uses that resize and can mimic others
(``resample``).

Units: DES band images are in nanomaggies (zero point 22.5); HSC images are
in counts with zero point 27 (1 nanomaggy = 63.1 counts), as the services
deliver them.

HSC colour: the viewer's ``hsc2`` JPEG shows g, r and **z**, but the model's
HSC bands are g, r, i (:data:`lsbg_classify.surveys.SURVEYS`).  The
simulated HSC cube holds g, r, i and :func:`render_jpeg` puts i in the red
channel with the ``HSC_MAPPING`` z scale.  The difference (i instead of z)
is a colour shift of about r-i vs r-z in the red channel only.

Everything is deterministic: the random state of a cutout is seeded from
``(seed, ra, dec)`` (positions rounded to 1e-6 deg) and the label.

Modules, in the order of the image chain: :mod:`.conditions` (survey
models, random states, observing conditions), :mod:`.scene` (scene and
profiles), :mod:`.populations` (field sources, bright stars, detector
effects), :mod:`.candidates` (the LSBG or artifact at the centre),
:mod:`.render` (image formation and the JPEG/FITS cutouts),
:mod:`.training_set` (model inputs for training), :mod:`.backgrounds`
(injection-recovery backgrounds); :mod:`.backend` serves the simulated sky
as the ``simulated`` survey backend and :mod:`.demo` runs the whole
pipeline on it.
"""
