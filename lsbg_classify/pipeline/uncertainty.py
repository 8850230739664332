"""Predictive uncertainty by Monte-Carlo dropout, and temperature scaling.

Monte-Carlo dropout (Gal & Ghahramani 2016) keeps the network's dropout
layers active at prediction time and scores each image many times; the
spread of the scores measures how much the prediction depends on which
units happen to be dropped.  It is a model-stage tool: the pipeline may
use it, and it imports nothing beside the model.

Temperature scaling (Guo et al. 2017) divides the logit of every
probability by one constant ``T`` fitted on labelled data
(:func:`lsbg_classify.diagnostics.reliability.fit_temperature`); applying a fitted
``T`` is inference, so it lives here too.
"""

from contextlib import contextmanager

import numpy as np

from .model import as_model_inputs, import_keras, import_tensorflow, keras_network_of

__all__ = ["MC_SAMPLES", "MC_BATCH", "MC_SEED", "mc_dropout_predict", "apply_temperature",
           "check_temperature"]

#: Default number of stochastic forward passes per image.  The standard
#: error of the estimated spread falls as 1/sqrt(2 N): 30 passes give it to
#: about 13 %, enough to rank candidates by uncertainty.
MC_SAMPLES = 30
#: Images per network call (each image is scored ``n_samples`` times).
MC_BATCH = 256
#: Default seed of the dropout masks, so that repeated runs agree.
MC_SEED = 0

# Probabilities are clipped this far from 0 and 1 before taking a logit, so
# that a saturated float32 score (exactly 1.0) has a finite logit.
PROB_EPSILON = 1e-7


def _sublayers(layer):
    """``layer`` and every layer nested in it, depth first."""
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from _sublayers(inner)


@contextmanager
def _dropout_only(network, seed):
    """Let ``network(x, training=True)`` change nothing but its dropout.

    Called with ``training=True``, a Keras ``BatchNormalization`` layer
    normalises by the batch's own statistics and updates its moving
    averages; one that is not trainable runs in inference mode instead, so
    the batch-norm layers are frozen for the duration.  Given a ``seed``, the
    dropout layers' seed generators are set from it (and put back afterwards)
    so that the masks are reproducible without touching any global random
    state.
    """
    keras = import_keras()
    layers = list(_sublayers(network))
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    dropouts = [layer for layer in layers
                if isinstance(layer, keras.layers.Dropout) and getattr(layer, "rate", 0) > 0]
    if not dropouts:
        raise ValueError(f"network {network.name!r} has no Dropout layer, so Monte-Carlo "
                         "dropout has nothing to sample")
    trainable = [layer.trainable for layer in norms]
    # Without a seed the generators simply advance, so each call draws fresh masks.
    generators = [] if seed is None else [layer.seed_generator for layer in dropouts]
    states = [np.asarray(g.state.value) for g in generators]
    try:
        for layer in norms:
            layer.trainable = False
        seeds = np.random.SeedSequence(seed).generate_state(len(generators)) if generators else []
        for g, s in zip(generators, seeds):
            # Keras seeds are non-negative 32-bit integers.
            g.state.assign(np.array([int(s) >> 1, 0], dtype=g.state.dtype))
        yield
    finally:
        for layer, flag in zip(norms, trainable):
            layer.trainable = flag
        for g, state in zip(generators, states):
            g.state.assign(state)


def mc_dropout_predict(model, images, n_samples=MC_SAMPLES, batch_size=MC_BATCH, seed=MC_SEED,
                       temperature=1.0):
    """Mean and spread of the LSBG probability with dropout left on.

    Each image is scored ``n_samples`` times by the Keras network called
    with ``training=True`` (built from the weights when the model scores
    through ONNX Runtime, which needs the ``train`` extra); only the dropout
    layers behave differently from ordinary prediction (batch normalisation keeps its trained statistics
    and is not updated).

    Parameters
    ----------
    model : LSBGModel or keras.Model
        The classifier; it must contain at least one ``Dropout`` layer.
    images : array_like, shape (n, 64, 64, 3)
        Model inputs in [0, 1] (uint8 arrays are divided by 255).
    n_samples : int
        Stochastic forward passes per image (default :data:`MC_SAMPLES`).
    batch_size : int
        Images per network call.
    seed : int or None
        Seed of the dropout masks: the same seed, images and batching give
        the same result.  None draws fresh masks.
    temperature : float
        Each sample's logit is divided by it before averaging (see
        :func:`apply_temperature`); 1 leaves the samples as they are.

    Returns
    -------
    mean, std : numpy.ndarray, shape (n,), float32
        Mean and standard deviation (ddof 0) of the ``n_samples``
        probabilities of each image, in probability units.  The mean is
        close to, but not the same as, the deterministic prediction
        (``model.predict``), which scales activations instead of dropping
        them.
    """
    if int(n_samples) < 2:
        raise ValueError(f"n_samples must be at least 2 to measure a spread, got {n_samples}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    network = keras_network_of(model)
    tf = import_tensorflow()
    images = as_model_inputs(images, network)
    mean = np.empty(len(images), np.float32)
    std = np.empty(len(images), np.float32)
    with _dropout_only(network, seed):
        # One graph for every pass of this call: about twice as fast as eager
        # calls, same masks.  It is traced with batch norm frozen, so it must
        # not outlive the context.
        forward = tf.function(lambda batch: network(batch, training=True), input_signature=[
            tf.TensorSpec((None, *images.shape[1:]), tf.float32)])
        for start in range(0, len(images), batch_size):
            batch = tf.constant(images[start : start + batch_size])
            samples = np.stack([forward(batch).numpy().reshape(-1)
                                for _ in range(int(n_samples))])
            samples = apply_temperature(samples, temperature)
            # Accumulate in float64: the spread may be tiny next to the mean.
            samples = samples.astype(np.float64)
            mean[start : start + len(batch)] = samples.mean(axis=0)
            std[start : start + len(batch)] = samples.std(axis=0)
    return mean, std


def check_temperature(temperature):
    """``temperature`` as a float, or a ValueError if it is not a positive finite number."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}"
                         ) from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return value


def apply_temperature(prob, temperature):
    """Temperature-scaled probabilities, ``sigmoid(logit(p) / T)``.

    ``T > 1`` pulls probabilities towards 0.5 (a model that was
    over-confident), ``T < 1`` pushes them apart; the order of the
    probabilities, hence the ROC curve, does not change.

    Parameters
    ----------
    prob : array_like of float
        Probabilities in [0, 1]; NaN stays NaN.  They are clipped
        :data:`PROB_EPSILON` away from 0 and 1 before taking the logit.
    temperature : float
        ``T > 0``.  ``T = 1`` returns ``prob`` unchanged.

    Returns
    -------
    numpy.ndarray
        Same shape, and the same floating dtype as ``prob`` (float64 for
        other inputs).
    """
    temperature = check_temperature(temperature)
    prob = np.asarray(prob)
    dtype = prob.dtype if np.issubdtype(prob.dtype, np.floating) else np.float64
    if temperature == 1.0:
        return prob.astype(dtype, copy=True)
    p = np.clip(prob.astype(np.float64), PROB_EPSILON, 1 - PROB_EPSILON)
    logit = np.log(p) - np.log1p(-p)
    return (1.0 / (1.0 + np.exp(-logit / temperature))).astype(dtype)
