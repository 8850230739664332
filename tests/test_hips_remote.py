"""HipsBackend against the real hips2fits service (run with ``--remote-data``)."""

import io

import numpy as np
import pytest
from astropy.io import fits

from lsbg_classify.surveys.hips import HipsBackend


@pytest.mark.remote_data
def test_remote_hips2fits(no_service_env):
    with HipsBackend("des", max_retries=2) as backend:
        payload = backend.download(30.0, -1.0)
    cube = fits.getdata(io.BytesIO(payload.data))
    assert cube.shape == (3, 256, 256)
    assert np.isfinite(cube).any()
