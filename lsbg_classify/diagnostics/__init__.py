"""Diagnostics: look at what the model does and how far to trust it.

:mod:`~lsbg_classify.diagnostics.explain` (Grad-CAM),
:mod:`~lsbg_classify.diagnostics.inspection` (contact sheets for eyeballing),
:mod:`~lsbg_classify.diagnostics.injection` (injection-recovery completeness),
:mod:`~lsbg_classify.diagnostics.reliability` (calibration of probabilities),
:mod:`~lsbg_classify.diagnostics.sim_vs_real` (simulated against real cutouts).
"""
