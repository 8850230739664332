"""Image sources for LSBG candidate cutouts.

Backends are found through the ``lsbg_classify.surveys`` entry-point group,
so another package can add one by declaring, in its own ``pyproject.toml``::

    [project.entry-points."lsbg_classify.surveys"]
    mysurvey = "mypackage.backend:MySurveyBackend"
"""

from importlib.metadata import entry_points

from .base import (
    ENTRY_POINT_GROUP,
    FITS,
    JPEG,
    SURVEYS,
    FetchError,
    FetchOutcome,
    NoCoverageError,
    Payload,
    SurveyBackend,
    SurveyInfo,
    get_survey,
)

__all__ = [
    "FITS",
    "JPEG",
    "SURVEYS",
    "FetchError",
    "FetchOutcome",
    "NoCoverageError",
    "Payload",
    "SurveyBackend",
    "SurveyInfo",
    "get_survey",
    "ENTRY_POINT_GROUP",
    "available_backends",
    "get_backend",
]


def _entry_points():
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_backends():
    """Names of the installed backends, sorted."""
    return sorted(_entry_points())


def get_backend(backend="legacysurvey", survey="des", **options):
    """Build a backend by entry-point name.

    Parameters
    ----------
    backend : str or SurveyBackend
        Entry-point name (``"legacysurvey"``, ``"hips"``, ``"local"``,
        ``"simulated"`` or one added by another package).  An instance is
        returned unchanged.
    survey : str
        ``"des"`` or ``"hsc"``.
    **options
        Passed to the backend's constructor (e.g. ``base_url``).

    Returns
    -------
    SurveyBackend
    """
    if isinstance(backend, SurveyBackend):
        if options:
            raise TypeError("options cannot be given together with a backend instance")
        return backend
    found = _entry_points()
    try:
        cls = found[str(backend).lower()].load()
    except KeyError:
        raise ValueError(
            f"unknown backend {backend!r}; installed backends: {sorted(found)}"
        ) from None
    instance = cls(survey=survey, **options)
    if getattr(cls, "name", None) is None:
        instance.name = str(backend).lower()  # the entry-point name, as documented
    return instance
