"""The classification pipeline: positions → cutouts → DeepShadows probabilities.

Stages, each in its own module:

- :mod:`~lsbg_classify.pipeline.catalog`: read, validate and write candidate catalogs;
- :mod:`~lsbg_classify.pipeline.cache`: the on-disk cutout cache;
- :mod:`~lsbg_classify.pipeline.preprocess`: a cutout payload to a model input;
- :mod:`~lsbg_classify.pipeline.model`: the DeepShadows network (ONNX Runtime or Keras);
- :mod:`~lsbg_classify.pipeline.uncertainty`: Monte-Carlo dropout and temperature scaling;
- :mod:`~lsbg_classify.pipeline.options`: defaults and checks of a run's options;
- :mod:`~lsbg_classify.pipeline.scoring`: fetch, decode and score a set of positions;
- :mod:`~lsbg_classify.pipeline.checkpoint`: chunked scoring that resumes by fingerprint;
- :mod:`~lsbg_classify.pipeline.classify`:
  :func:`~lsbg_classify.pipeline.classify.classify_catalog`, the library
  entry point for an astropy Table;
- :mod:`~lsbg_classify.pipeline.partitions`: the per-partition form for Dask/LSDB frames.

The pipeline imports the survey backends and the shared modules below it,
never the simulator or the tools beside it (``tests/test_layers.py``).
"""
