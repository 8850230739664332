"""An offline image source: the simulated sky of :mod:`lsbg_classify.simulation`.

It answers like the Legacy Surveys viewer (a JPEG or a FITS cube per
position) without a network, so the whole pipeline can be run and tested
offline, and every answer comes with a known truth label
(:func:`lsbg_classify.simulation.conditions.truth_label`).
"""

import math
from urllib.parse import urlencode

from ..surveys.base import FITS, JPEG, NoCoverageError, Payload, SurveyBackend
from .conditions import SIMULATOR_VERSION, truth_label
from .render import render_fits, render_jpeg

__all__ = ["SimulatedBackend", "FOOTPRINT_MAX_ABS_DEC"]

#: The simulated footprint covers the whole sky except the polar caps
#: beyond this declination (deg), so callers can exercise ``no_coverage``.
FOOTPRINT_MAX_ABS_DEC = 89.0


class SimulatedBackend(SurveyBackend):
    """Cutouts of a simulated DES or HSC sky.

    Parameters
    ----------
    survey : str or SurveyInfo
        ``"des"`` or ``"hsc"``.
    image_format : str, optional
        ``"jpeg"`` (default, like the viewer's ``cutout.jpg``) or ``"fits"``
        (band cube in the survey's native flux units).
    seed : int
        Sky seed: the same seed gives the same sky and labels.
    """

    name = "simulated"
    formats = (JPEG, FITS)
    remote = False

    def __init__(self, survey="des", image_format=None, seed=0):
        super().__init__(survey=survey, image_format=image_format)
        self.seed = int(seed)

    @property
    def layer(self):
        return f"simulated-{self.survey.name}"

    def request_url(self, ra, dec):
        query = urlencode(
            {"ra": f"{float(ra):.7f}", "dec": f"{float(dec):.7f}", "seed": self.seed,
             "format": self.image_format}
        )
        return f"simulated://{self.survey.name}?{query}"

    def _check_coverage(self, ra, dec):
        ra, dec = float(ra), float(dec)
        if not (math.isfinite(ra) and math.isfinite(dec)) or abs(dec) > 90.0:
            raise NoCoverageError(f"({ra}, {dec}) is not a sky position")
        if abs(dec) > FOOTPRINT_MAX_ABS_DEC:
            raise NoCoverageError(
                f"dec={dec:.4f} is outside the simulated footprint (|dec| <= {FOOTPRINT_MAX_ABS_DEC})"
            )

    def download(self, ra, dec):
        """Render one cutout.

        Raises
        ------
        NoCoverageError
            ``|dec| > 89`` deg (the simulated footprint's edge).
        """
        self._check_coverage(ra, dec)
        if self.image_format == FITS:
            data = render_fits(ra, dec, self.survey, seed=self.seed)
        else:
            data = render_jpeg(ra, dec, self.survey, seed=self.seed)
        return Payload(data=data, format=self.image_format)

    def truth_label(self, ra, dec):
        """The label of the simulated candidate at a position (1 = LSBG)."""
        return truth_label(ra, dec, seed=self.seed)

    def cache_salt(self):
        return f"seed={self.seed};v={SIMULATOR_VERSION}"

    def describe(self):
        out = super().describe()
        out["seed"] = self.seed
        return out
