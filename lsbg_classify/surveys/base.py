"""The survey backend interface.

A backend knows how to get one cutout for a sky position from one image
service and hands back the *payload* (the bytes the service sends: a JPEG,
or a FITS cube of band images).  Decoding the payload into a model input is
the job of :mod:`lsbg_classify.pipeline.preprocess`; caching payloads is the job of
:mod:`lsbg_classify.pipeline.cache`.  Keeping the three apart means a cached payload
is exactly what the service sent, and re-decoding never needs the network.

New backends subclass :class:`SurveyBackend` and register themselves in the
``lsbg_classify.surveys`` entry-point group of their own package.
"""

import hashlib
import logging
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import astropy.units as u

from .. import status
from ..colour import DES_MAPPING, HSC_MAPPING, ColourMapping
from .pacing import AdaptiveConcurrency

__all__ = [
    "SurveyInfo",
    "SURVEYS",
    "get_survey",
    "Payload",
    "FetchOutcome",
    "NoCoverageError",
    "FetchError",
    "SurveyBackend",
    "JPEG",
    "FITS",
]

JPEG = "jpeg"
FITS = "fits"

#: Entry-point group in which packages register backends.
ENTRY_POINT_GROUP = "lsbg_classify.surveys"

log = logging.getLogger(__name__)

# Number of decimals kept from RA/Dec in cache keys: 1e-6 deg = 3.6 mas,
# far below a pixel, so two catalogs with rounding noise share cutouts.
POSITION_DECIMALS = 6


@dataclass(frozen=True)
class SurveyInfo:
    """Facts about one survey as the DeepShadows pipeline uses it.

    Attributes
    ----------
    name : str
        Short name, ``"des"`` or ``"hsc"``.
    bands : tuple of str
        Bands of the colour composite, bluest first.
    native_pixel_scale : `~astropy.units.Quantity`
        Pixel scale of the survey coadds (arcsec / pix).
    pixel_scale : `~astropy.units.Quantity`
        Pixel scale of the cutouts the paper used (arcsec / pix): the
        viewer's ``zoom=15``, i.e. half the native scale.
    cutout_size : int
        Cutout side in pixels as fetched (256 in the paper).
    legacysurvey_layer : str
        Layer of the Legacy Surveys sky viewer.
    hips_ids : dict
        CDS HiPS identifier per band.
    colour : ColourMapping
        The viewer's colour mapping for this layer.
    """

    name: str
    bands: tuple
    native_pixel_scale: u.Quantity
    pixel_scale: u.Quantity
    cutout_size: int
    legacysurvey_layer: str
    hips_ids: dict = field(default_factory=dict)
    colour: ColourMapping = DES_MAPPING

    @property
    def field_of_view(self):
        """Side of the cutout on the sky (arcsec)."""
        return (self.pixel_scale * self.cutout_size * u.pix).to(u.arcsec)


_PER_PIX = u.arcsec / u.pix

SURVEYS = {
    "des": SurveyInfo(
        name="des",
        bands=("g", "r", "z"),
        native_pixel_scale=0.262 * _PER_PIX,
        pixel_scale=0.131 * _PER_PIX,
        cutout_size=256,
        legacysurvey_layer="des-dr1",
        hips_ids={b: f"CDS/P/DES-DR2/{b}" for b in "grz"},
        colour=DES_MAPPING,
    ),
    "hsc": SurveyInfo(
        name="hsc",
        bands=("g", "r", "i"),
        native_pixel_scale=0.168 * _PER_PIX,
        pixel_scale=0.084 * _PER_PIX,
        cutout_size=256,
        legacysurvey_layer="hsc2",
        hips_ids={b: f"CDS/P/HSC/DR2/wide/{b}" for b in "gri"},
        colour=HSC_MAPPING,
    ),
}


def get_survey(name):
    """Return the :class:`SurveyInfo` called ``name`` (case-insensitive)."""
    try:
        return SURVEYS[str(name).lower()]
    except KeyError:
        raise ValueError(
            f"unknown survey {name!r}; choose one of {sorted(SURVEYS)}"
        ) from None


@dataclass(frozen=True)
class Payload:
    """What a service returned for one position.

    Attributes
    ----------
    data : bytes
        A JPEG file (``format == "jpeg"``), or a FITS file whose primary HDU
        is a cube of shape (3, ny, nx) with the survey's bands, bluest first,
        in the survey's native flux units (``format == "fits"``).
    format : str
        ``"jpeg"`` or ``"fits"``.
    """

    data: bytes
    format: str


@dataclass(frozen=True)
class FetchOutcome:
    """Result of fetching one position: a payload or a status saying why not."""

    status: str
    payload: Payload = None
    message: str = ""


class NoCoverageError(Exception):
    """The position lies outside the survey footprint."""


class FetchError(Exception):
    """The service could not deliver a cutout (after any retries)."""


def _registered_name(cls):
    """Entry-point name under which ``cls`` is registered, else its class name in lower case."""
    target = f"{cls.__module__}:{cls.__qualname__}"
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.replace(" ", "") == target:
            return ep.name
    return cls.__name__.lower()


def _paced(function, limiter):
    """``function`` run while holding a place of ``limiter``."""
    def run(*args):
        with limiter.slot():
            return function(*args)

    return run


class SurveyBackend(ABC):
    """Base class of all image sources.

    Parameters
    ----------
    survey : str or SurveyInfo
        ``"des"`` or ``"hsc"``: which bands, pixel scale and colour mapping.
    image_format : str
        ``"jpeg"`` or ``"fits"`` where the backend offers both.

    Notes
    -----
    Subclasses implement :meth:`request_url` and :meth:`download`, and may
    set the class attributes

    ``name``
        The backend's name in cache keys, cache folders and provenance.
        Left as None, it is the name the class is registered under in the
        ``lsbg_classify.surveys`` entry-point group (else the class name in
        lower case).
    ``formats``
        Payload formats the backend can deliver, the default first
        (``("jpeg",)`` unless set).
    ``remote``
        Whether downloads talk to a remote service, so that ``workers``
        threads fetch in parallel (True unless set).
    ``layer``
        The image set read, for cache keys and provenance (a str, or a
        property); None (the default) when the backend reads only one.

    and override :meth:`cache_salt` (anything else that changes the
    pixels), :meth:`describe` and :meth:`close`.  Everything else
    (batching, concurrency, cache keys, per-row statuses) is shared.
    """

    #: Name of the backend; None takes its entry-point name.
    name = None
    #: Payload formats the backend can deliver; the first is the default.
    formats = (JPEG,)
    #: Whether downloads talk to a remote service (then workers > 1 helps).
    remote = True
    #: Identifier of the image set read (cache keys, provenance); None if only one.
    layer = None

    def __init__(self, survey="des", image_format=None):
        if self.name is None:
            self.name = _registered_name(type(self))
        self.survey = survey if isinstance(survey, SurveyInfo) else get_survey(survey)
        image_format = self.formats[0] if image_format is None else image_format.lower()
        if image_format not in self.formats:
            raise ValueError(
                f"backend {self.name!r} offers formats {self.formats}, not {image_format!r}"
            )
        self.image_format = image_format

    @property
    def bands(self):
        """Bands of the colour composite, bluest first."""
        return self.survey.bands

    @property
    def native_pixel_scale(self):
        return self.survey.native_pixel_scale

    @property
    def pixel_scale(self):
        return self.survey.pixel_scale

    @property
    def cutout_size(self):
        return self.survey.cutout_size

    @abstractmethod
    def request_url(self, ra, dec):
        """Return the URL (or other request description) for one position.

        Nothing is sent.  Useful to check what would be asked of a service
        and to open the same cutout in a browser.

        Parameters
        ----------
        ra, dec : float
            Position in degrees (ICRS).
        """

    @abstractmethod
    def download(self, ra, dec):
        """Fetch one cutout.

        Returns
        -------
        Payload

        Raises
        ------
        NoCoverageError
            The position is outside the footprint.
        FetchError
            The service failed after retries.
        """

    def cache_key(self, ra, dec):
        """A string that identifies this cutout in a persistent cache.

        It covers everything that changes the payload: backend, survey,
        layer, position, size, pixel scale and format.
        """
        parts = (
            self.name,
            self.survey.name,
            self.layer or "",
            f"{round(float(ra), POSITION_DECIMALS):.{POSITION_DECIMALS}f}",
            f"{round(float(dec), POSITION_DECIMALS):.{POSITION_DECIMALS}f}",
            str(self.cutout_size),
            f"{self.pixel_scale.to_value(_PER_PIX):.6g}",
            self.image_format,
            self.cache_salt(),
        )
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
        return f"{self.name}-{self.survey.name}-{digest[:32]}"

    def cache_salt(self):
        """Extra text mixed into cache keys (e.g. a server URL or a seed)."""
        return ""

    def describe(self):
        """Provenance entries for the output table's ``meta`` (``layer`` only if set)."""
        entries = {
            "backend": self.name,
            "survey": self.survey.name,
            "layer": self.layer,
            "image_format": self.image_format,
            "pixel_scale_arcsec": float(self.pixel_scale.to_value(_PER_PIX)),
            "cutout_size_pix": int(self.cutout_size),
        }
        if entries["layer"] is None:
            del entries["layer"]
        return entries

    def fetch_one(self, ra, dec):
        """Fetch one position and report the outcome instead of raising."""
        try:
            return FetchOutcome(status.OK, self.download(ra, dec))
        except NoCoverageError as exc:
            return FetchOutcome(status.NO_COVERAGE, message=str(exc))
        except FetchError as exc:
            return FetchOutcome(status.FETCH_FAILED, message=str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken row must not end a long run
            log.warning("backend %r failed at ra=%s dec=%s", self.name, ra, dec, exc_info=True)
            return FetchOutcome(status.FETCH_FAILED, message=f"{type(exc).__name__}: {exc}")

    def fetch(self, ra, dec, workers=4, on_fetched=None):
        """Fetch many positions, ``workers`` at a time.

        Parameters
        ----------
        ra, dec : sequence of float
            Positions in degrees.
        workers : int
            Most concurrent requests.  Ignored by local backends.  Fewer
            are sent while the service answers 429/503 (see
            :mod:`~lsbg_classify.surveys.pacing`).
        on_fetched : callable, optional
            ``on_fetched(index, outcome)``, called in the fetching thread as
            soon as an outcome is known, before it waits to be yielded: the
            pipeline caches cutouts there, so a run killed while finished
            downloads queue up behind a slow consumer loses none of them.

        Yields
        ------
        index : int
            Position in the input sequences.
        outcome : FetchOutcome
            In completion order, not input order.
        """
        def fetch_index(i, r, d):
            outcome = self.fetch_one(r, d)
            if on_fetched is not None:
                on_fetched(i, outcome)
            return outcome

        if not self.remote or workers <= 1:
            for i, (r, d) in enumerate(zip(ra, dec)):
                yield i, fetch_index(i, r, d)
            return
        paced = _paced(fetch_index, AdaptiveConcurrency(workers))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(paced, i, r, d): i for i, (r, d) in enumerate(zip(ra, dec))
            }
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
            finally:
                for future in futures:
                    future.cancel()

    def close(self):
        """Release network sessions or open files."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
