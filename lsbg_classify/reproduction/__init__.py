"""Reproduce the DeepShadows paper's results.

:mod:`~lsbg_classify.reproduction.reproduce` (the end-to-end run),
:mod:`~lsbg_classify.reproduction.baselines` (the paper's non-CNN baselines),
:mod:`~lsbg_classify.reproduction.report` (the HTML report).
"""
