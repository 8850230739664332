"""LegacySurveyBackend against the real Legacy Surveys viewer (run with ``--remote-data``)."""

import io

import pytest
from PIL import Image

from lsbg_classify.surveys.legacysurvey import LegacySurveyBackend


@pytest.mark.remote_data
def test_remote_legacysurvey(no_service_env):
    # A DES field LSBG candidate region (Stripe 82 overlap).
    with LegacySurveyBackend("des", max_retries=2) as backend:
        payload = backend.download(30.0, -1.0)
    image = Image.open(io.BytesIO(payload.data))
    assert image.size == (256, 256)
