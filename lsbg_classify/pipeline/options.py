"""Options of a classification run: defaults, their checks, the result template and the model check.
"""

import numpy as np
from astropy.table import Column, MaskedColumn

from .. import status
from .catalog.columns import add_result_columns, output_column_names
from .catalog.read import CatalogError
from .model import DEFAULT_DECISION_THRESHOLD
from .preprocess import MODEL_IMAGE_SIZE
from .uncertainty import check_temperature

__all__ = ["check_options", "check_model", "result_template", "OptionError", "ColumnClashError",
           "DEFAULT_THRESHOLD", "MC_STD_COLUMN", "MESSAGE_COLUMN"]

# The class threshold of weights whose card chooses none (one constant, in model).
DEFAULT_THRESHOLD = DEFAULT_DECISION_THRESHOLD
# Concurrent requests to a public service: enough to hide latency, few
# enough to be polite to a server with no documented rate limit.
DEFAULT_WORKERS = 8
#: Images per model call unless told: None, the model's fastest measured
#: (:attr:`~lsbg_classify.pipeline.model.LSBGModel.predict_batch`).
DEFAULT_BATCH_SIZE = None
# Payloads queued per decode thread ahead of the consumer.
DECODE_AHEAD_PER_THREAD = 32
# Rows per checkpointed chunk: a few minutes of fetching from a public
# service, so an interruption loses little.
DEFAULT_CHUNK_SIZE = 2000
#: Column of the Monte-Carlo dropout spread, added when ``mc_samples > 0``.
MC_STD_COLUMN = "lsbg_prob_std"
#: Column saying why a row has no score, added when ``messages=True``.
MESSAGE_COLUMN = "lsbg_message"


class OptionError(ValueError):
    """An argument that cannot work, found before anything is fetched.

    Attributes
    ----------
    option : str
        The keyword argument at fault (``"chunk_size"``, ``"model"``, ...).
    template : str
        The message with ``{}`` where the option's name goes, so that the
        command line can name its flag instead (:meth:`naming`).
    """

    def __init__(self, option, template, spelled=None):
        self.option = option
        self.template = template
        super().__init__(template.format(spelled or option))

    def naming(self, name):
        """The message with the option called ``name`` (e.g. ``"--chunk-size"``)."""
        return self.template.format(name)


class ColumnClashError(OptionError, CatalogError):
    """The catalog already has a column the run would add (option ``overwrite_columns``)."""


def whole_number(option, value, smallest):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise OptionError(option, f"{{}} must be a whole number, got {value!r}")
    if value < smallest:
        raise OptionError(option, f"{{}} must be at least {smallest}, got {value}")


def check_options(threshold=DEFAULT_THRESHOLD, chunk_size=DEFAULT_CHUNK_SIZE,
                  workers=DEFAULT_WORKERS, batch_size=DEFAULT_BATCH_SIZE, mc_samples=0,
                  temperature=None):
    """Refuse option values that cannot work, before any catalog is read or fetched.

    Parameters are those of :func:`classify_catalog`.

    Raises
    ------
    OptionError
        Naming the keyword: ``threshold`` outside [0, 1] or NaN (None:
        the model's own); ``chunk_size``, ``workers`` or ``batch_size``
        (None: the model's fastest) not a whole number >= 1; ``mc_samples`` other than 0 or >= 2; ``temperature`` not a
        positive finite number.
    """
    if threshold is not None:
        try:
            threshold_ok = 0.0 <= float(threshold) <= 1.0
        except (TypeError, ValueError):
            threshold_ok = False
        if not threshold_ok:
            raise OptionError("threshold", f"{{}} must lie in [0, 1], got {threshold!r}")
    whole_number("chunk_size", chunk_size, 1)
    whole_number("workers", workers, 1)
    if batch_size is not None:
        whole_number("batch_size", batch_size, 1)
    whole_number("mc_samples", mc_samples, 0)
    if mc_samples == 1:
        raise OptionError("mc_samples", "{} must be 0 (off) or at least 2, got 1")
    if temperature is not None:
        try:
            check_temperature(temperature)
        except ValueError:
            raise OptionError("temperature", "{} must be a positive finite number, got "
                              f"{temperature!r}") from None


def _added_columns(mc_samples, messages):
    return (*output_column_names(), *([MC_STD_COLUMN] if mc_samples else []),
            *([MESSAGE_COLUMN] if messages else []))


def check_clashes(table, mc_samples, messages, overwrite_columns):
    clash = [c for c in _added_columns(mc_samples, messages) if c in table.colnames]
    if clash and not overwrite_columns:
        raise ColumnClashError(
            "overwrite_columns",
            f"the catalog already has column(s) {', '.join(clash)}; pass {{}} to replace them, "
            "or remove or rename them", spelled="overwrite_columns=True")


def result_template(table, mc_samples=0, messages=False, overwrite_columns=False):
    """``table`` with the columns :func:`classify_catalog` would add, every row unscored.

    Writing it (a few rows of it) to the output's format tells, before any
    fetch, whether that format can hold the result.

    Raises
    ------
    OptionError
        A result column already exists and ``overwrite_columns`` is False.
    """
    check_clashes(table, mc_samples, messages, overwrite_columns)
    n = len(table)
    nan = np.full(n, np.nan, np.float32)
    out = add_result_columns(table, nan, np.zeros(n, np.int8),
                             np.full(n, status.FETCH_FAILED), overwrite_columns=True)
    if mc_samples:
        out = with_std_column(out, nan)
    if messages:
        out = with_message_column(out, np.full(n, "reason"))
    return out


# Probes of the model check: black, white and noise images.
_PROBE_SEED = 0


def check_model(model):
    """Refuse a network that does not map 64×64×3 images to one probability each.

    Runs the network (dropout off) on a black, a white and a noise image.

    Parameters
    ----------
    model : LSBGModel

    Raises
    ------
    OptionError
        Naming ``model``: another input shape, an output that is not one
        value per image, values outside [0, 1], or a last layer whose
        activation is not a sigmoid.
    """
    shape = tuple(getattr(model.network, "input_shape", (None,) * 4)[1:])
    want = (MODEL_IMAGE_SIZE, MODEL_IMAGE_SIZE, 3)
    if shape != want:
        raise OptionError("model", f"{{}} {model.name} takes images of shape {shape}; "
                                   f"DeepShadows needs {want}")
    layers = getattr(model.network, "layers", None)
    activation = getattr(layers[-1], "activation", None) if layers else None
    name = getattr(activation, "__name__", None)
    if name is not None and name != "sigmoid":
        raise OptionError("model", f"{{}} {model.name} ends in a {name!r} activation, not a "
                                   "sigmoid: its outputs are not probabilities")
    rng = np.random.default_rng(_PROBE_SEED)
    probes = np.stack([np.zeros(want), np.ones(want), rng.uniform(0, 1, want)]).astype(np.float32)
    out = np.asarray(model.eager_forward(probes))
    if out.shape not in ((3,), (3, 1)):
        raise OptionError("model", f"{{}} {model.name} gives output of shape {out.shape[1:]} per "
                                   "image; DeepShadows needs one probability per image")
    if not np.all(np.isfinite(out) & (out >= 0) & (out <= 1)):
        raise OptionError("model", f"{{}} {model.name} gives values outside [0, 1] "
                                   f"({', '.join(f'{v:.3g}' for v in out.ravel())}): not "
                                   "probabilities")


def with_message_column(scored, message):
    """``scored`` with the per-row reasons as its (replaced) last column."""
    column = Column(np.asarray(message, dtype=str), name=MESSAGE_COLUMN,
                    description="why the row has no score (empty where it has one)")
    if MESSAGE_COLUMN in scored.colnames:
        scored.remove_column(MESSAGE_COLUMN)
    scored.add_column(column)
    return scored


def with_std_column(scored, std):
    """``scored`` with the Monte-Carlo dropout spread inserted after ``lsbg_prob``."""
    no_score = ~np.isfinite(std)
    column = MaskedColumn(
        np.where(no_score, np.nan, std).astype(np.float32), name=MC_STD_COLUMN, mask=no_score,
        fill_value=np.nan,
        description="Monte-Carlo dropout standard deviation of the LSBG probability (not a "
                    "calibrated error bar); masked (NaN) where not scored")
    if MC_STD_COLUMN in scored.colnames:
        scored.remove_column(MC_STD_COLUMN)
    scored.add_column(column, index=scored.colnames.index("lsbg_prob") + 1)
    return scored
