"""Training and evaluation: fit the network, score it, ship it.

:mod:`~lsbg_classify.training.train` (training and fine-tuning),
:mod:`~lsbg_classify.training.defaults` (the recipes' hyper-parameters),
:mod:`~lsbg_classify.training.evaluate` (metrics and their figures),
:mod:`~lsbg_classify.training.recipes` (rebuilding the bundled models),
:mod:`~lsbg_classify.training.onnx_export` (ONNX twins of Keras weights).
"""
