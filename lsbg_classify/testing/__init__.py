"""Test doubles and the benchmark that drives them.

:mod:`~lsbg_classify.testing.loopback` serves the simulated sky through
local HTTP servers that speak the real services' protocols (with injectable
faults); :mod:`~lsbg_classify.testing.benchmark` measures the pipeline's
throughput against them.
"""
