"""The DeepShadows convolutional network and its bundled weights.

Architecture and optimiser follow Table 1 and Section 4 of Tanoglidis,
Ćiprijanović & Drlica-Wagner (2021, Astronomy & Computing 35, 100469).
"""

import copy
import hashlib
import json
import os
import sys
import threading
from importlib import resources
from pathlib import Path

import numpy as np

from .preprocess import MODEL_IMAGE_SIZE

__all__ = [
    "INPUT_SHAPE",
    "as_model_inputs",
    "BUNDLED_MODELS",
    "PREDICT_BATCH",
    "RUNTIMES",
    "TRAIN_EXTRA",
    "MissingExtraError",
    "import_keras",
    "import_tensorflow",
    "build_deepshadows",
    "compile_deepshadows",
    "LSBGModel",
    "ModelLoadError",
    "OnnxNetwork",
    "keras_network_of",
    "load_model",
    "bundled_weights_path",
    "card_path",
    "onnx_twin_path",
    "dihedral_views",
    "predict_tta",
]

# Hyper-parameters of the paper.
INPUT_SHAPE = (MODEL_IMAGE_SIZE, MODEL_IMAGE_SIZE, 3)
CONV_FILTERS = (16, 32, 64)
CONV_KERNEL = 3
CONV_L2 = 0.13
DENSE_UNITS = 1024
DENSE_L2 = 0.12
DROPOUT_RATE = 0.4
LEARNING_RATE = 0.1

#: Names of the weights shipped with the package.
BUNDLED_MODELS = ("des", "hsc")

#: Images per network call, ONNX Runtime and Keras alike.  Measured on 2
#: cores under load (interleaved, ONNX Runtime with its memory arena), 32 to
#: 256 images ran within 10% of each other; 64 keeps the activations the
#: arena holds near 64 MB.  With the compiled TensorFlow graph 64 ran
#: 1.1-1.3x faster than 256: the first layer's output for 64 images (16 MiB)
#: stays near the cache.  ``lsbg-classify bench`` prints the sweep.
PREDICT_BATCH = 64

#: ``lsbg_class`` threshold of weights whose card chooses none.
DEFAULT_DECISION_THRESHOLD = 0.5

#: How :func:`load_model` may run a network: ``"auto"`` (ONNX Runtime when
#: the weights have a verified ONNX twin, else Keras), ``"onnx"`` or ``"keras"``.
RUNTIMES = ("auto", "onnx", "keras")

#: The optional dependency set that brings TensorFlow and Keras.
TRAIN_EXTRA = 'pip install "lsbg-classify[train]"'


class MissingExtraError(ImportError):
    """A feature needs TensorFlow/Keras, which this installation lacks."""

    def __init__(self, missing):
        super().__init__(
            f"this needs TensorFlow and Keras (training, fine-tuning, explain, Monte-Carlo "
            f"dropout, weights without an ONNX twin), but {missing} is not installed: "
            f"{TRAIN_EXTRA}")


def import_keras():
    """Import Keras on first use, quietly.

    Importing TensorFlow costs seconds; keeping it out of
    ``import lsbg_classify`` keeps the command line quick to start, and a
    plain install scores the bundled models without it (ONNX Runtime).

    Raises
    ------
    MissingExtraError
        Keras (or its backend) is not installed.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras
    except ImportError as exc:
        raise MissingExtraError(exc.name or "keras") from exc
    return keras


def import_tensorflow():
    """Import TensorFlow on first use, quietly; :class:`MissingExtraError` if absent."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow
    except ImportError as exc:
        raise MissingExtraError(exc.name or "tensorflow") from exc
    return tensorflow


def build_deepshadows(input_shape=INPUT_SHAPE):
    """Build the DeepShadows network, uncompiled, with random weights.

    Parameters
    ----------
    input_shape : tuple of int
        (height, width, channels) of the images, (64, 64, 3) in the paper.

    Returns
    -------
    keras.Sequential
        4,220,385 trainable parameters for 64×64×3 inputs.
    """
    keras = import_keras()
    layers = [keras.Input(shape=input_shape)]
    for filters in CONV_FILTERS:
        layers += [
            keras.layers.Conv2D(
                filters,
                CONV_KERNEL,
                strides=1,
                padding="same",
                activation="relu",
                kernel_regularizer=keras.regularizers.L2(CONV_L2),
            ),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D(pool_size=2),
            keras.layers.Dropout(DROPOUT_RATE),
        ]
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(
            DENSE_UNITS, activation="relu", kernel_regularizer=keras.regularizers.L2(DENSE_L2)
        ),
        keras.layers.Dense(1, activation="sigmoid"),
    ]
    return keras.Sequential(layers, name="deepshadows")


def compile_deepshadows(model, learning_rate=LEARNING_RATE):
    """Compile with the paper's loss and optimiser (Adadelta)."""
    keras = import_keras()
    model.compile(
        optimizer=keras.optimizers.Adadelta(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def bundled_weights_path(name):
    """Path of the weights file bundled for ``name`` (``"des"``/``"hsc"``)."""
    if name not in BUNDLED_MODELS:
        raise ValueError(f"no bundled model {name!r}; bundled: {BUNDLED_MODELS}")
    return Path(str(resources.files("lsbg_classify") / "data" / "models" / f"{name}.weights.h5"))


def card_path(weights_path):
    """The model card (training record, JSON) beside a ``.weights.h5`` file."""
    return Path(str(weights_path).removesuffix(".weights.h5") + ".json")


def onnx_twin_path(weights_path):
    """Where the ONNX twin of a ``.weights.h5`` file lies (``X.weights.h5`` -> ``X.onnx``)."""
    return Path(str(weights_path).removesuffix(".weights.h5") + ".onnx")


def file_sha256(path):
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OnnxNetwork:
    """The DeepShadows inference graph run by ONNX Runtime, called like a Keras network.

    Parameters
    ----------
    path : path-like
        ``.onnx`` file written by :mod:`lsbg_classify.training.onnx_export`.
    threads : int, optional
        Threads of one network call (default: ONNX Runtime's, one per
        physical core).

    Attributes
    ----------
    input_shape : tuple
        ``(None, 64, 64, 3)``, as a Keras model reports it.
    metadata : dict
        The graph's metadata (``weights_sha256`` of the weights it was made of).

    Notes
    -----
    ONNX Runtime sessions may be run from several threads at once.
    """

    def __init__(self, path, threads=None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: the decode threads and other
        # processes share the cores, and under such contention spinning
        # threads slowed scoring (``lsbg-classify bench`` on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The arena keeps a run's activations (about 1 MB per image) reserved
        # at the largest batch run, instead of mapping and zeroing them anew
        # on every call: under load, without it, scoring ran half as fast.
        options.enable_cpu_mem_arena = True
        if threads:
            options.intra_op_num_threads = int(threads)
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(path), options,
                                                    providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        self._input = inputs[0].name
        self.input_shape = (None, *inputs[0].shape[1:])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, images, training=False):
        """(n, 1) float32 probabilities of float32 images in [0, 1]."""
        if training:
            # Only the inference pass is exported; dropout needs the Keras network.
            raise ValueError("the ONNX graph is the inference pass only; use "
                             "LSBGModel.keras_network() for training-mode calls")
        batch = np.ascontiguousarray(images, dtype=np.float32)
        return self.session.run(None, {self._input: batch})[0]


def as_model_inputs(images, network):
    """Images as ``network`` takes them, converted as :meth:`LSBGModel.predict` needs them.

    Parameters
    ----------
    images : array_like, shape (n, height, width, channels)
        Images in [0, 1]; uint8 arrays are divided by 255.
    network : keras.Model or OnnxNetwork
        Anything with an ``input_shape`` of ``(None, height, width, channels)``.

    Returns
    -------
    numpy.ndarray, float32

    Raises
    ------
    ValueError
        The images do not have the network's input shape.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = images.astype(np.float32, copy=False)
    expected = tuple(network.input_shape[1:])
    if images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(f"expected images of shape (n, {', '.join(map(str, expected))}), "
                         f"got {images.shape}")
    return images


class LSBGModel:
    """A trained classifier: network plus where it came from.

    Parameters
    ----------
    network : keras.Model or OnnxNetwork
        Maps (n, 64, 64, 3) images in [0, 1] to (n, 1) LSBG probabilities.
    name : str
        ``"des"``, ``"hsc"`` or the file name of user weights.
    weights_sha256 : str
        Checksum of the weights file, for provenance.
    card : dict
        Training record shipped beside the weights (may be empty).
    weights_path : path-like, optional
        The ``.weights.h5`` file, from which :meth:`keras_network` builds
        the Keras network when ``network`` is an :class:`OnnxNetwork`.
    """

    def __init__(self, network, name, weights_sha256="", card=None, weights_path=None):
        self.network = network
        self.name = name
        self.weights_sha256 = weights_sha256
        self.card = card or {}
        self.weights_path = None if weights_path is None else Path(weights_path)
        # (network, compiled forward pass), built on the first predict.
        self._compiled = None
        self._compile_lock = threading.Lock()
        self._keras = None
        self.tta = False

    @property
    def decision_threshold(self):
        """``lsbg_class`` threshold chosen for these weights (model card), else 0.5."""
        return float(self.card.get("decision_threshold", DEFAULT_DECISION_THRESHOLD))

    def with_tta(self):
        """This model, averaging every prediction over the 8 flips and rotations.

        See :func:`predict_tta`.  The returned model shares the network.
        """
        twin = copy.copy(self)
        twin.tta = True
        return twin

    @property
    def runtime(self):
        """``"onnxruntime"`` or ``"keras"``: what :meth:`predict` runs."""
        return "onnxruntime" if isinstance(self.network, OnnxNetwork) else "keras"

    def keras_network(self):
        """The Keras network, for what the ONNX graph cannot do.

        Monte-Carlo dropout and Grad-CAM need the network's layers; when
        the model scores through ONNX Runtime, the Keras network is built
        from :attr:`weights_path` on first use.

        Raises
        ------
        MissingExtraError
            TensorFlow/Keras are not installed.
        ValueError
            The model has no Keras weights to build it from.
        """
        if not isinstance(self.network, OnnxNetwork):
            return self.network
        with self._compile_lock:
            if self._keras is None:
                if self.weights_path is None:
                    raise ValueError(f"model {self.name!r} has no Keras weights to build the "
                                     "Keras network from")
                self._keras = _load_network(self.weights_path)
            return self._keras

    @property
    def predict_batch(self):
        """Images per network call (:data:`PREDICT_BATCH`, the fastest measured)."""
        return PREDICT_BATCH

    def predict(self, images, batch_size=None, compiled=True):
        """LSBG probability for each image.

        Parameters
        ----------
        images : array_like, shape (n, 64, 64, 3)
            Model inputs in [0, 1] (uint8 arrays are divided by 255).
        batch_size : int, optional
            Images per network call (default :attr:`predict_batch`).
        compiled : bool
            Keras networks only: run the network as a TensorFlow graph
            (:meth:`compiled_forward`, the default: faster, same
            probabilities to float32 rounding) or call it eagerly, layer by
            layer.  An ONNX Runtime network ignores it.

        Returns
        -------
        numpy.ndarray, shape (n,), float32
            With :attr:`tta` (see :meth:`with_tta`), the mean over the 8
            flips and rotations of each image.
        """
        if self.tta:
            images = np.asarray(images)
            total = np.zeros(len(images), np.float64)
            for view in dihedral_views(images):
                total += self._predict(np.ascontiguousarray(view), batch_size, compiled)
            return (total / 8).astype(np.float32)
        return self._predict(images, batch_size, compiled)

    def _predict(self, images, batch_size, compiled):
        batch_size = self.predict_batch if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        images = as_model_inputs(images, self.network)
        forward = self.compiled_forward() if compiled else self.eager_forward
        out = np.empty(len(images), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            out[start : start + len(batch)] = np.asarray(forward(batch)).reshape(-1)
        return out

    def eager_forward(self, batch):
        """Inference pass (dropout off), one Keras layer call after another."""
        return self.network(batch, training=False)

    def compiled_forward(self):
        """The inference pass as one TensorFlow graph, built on first use.

        The graph takes any number of images (a ``None`` batch dimension),
        so it is traced once per model whatever the batch sizes; building
        it is guarded by a lock, and TensorFlow runs a built graph from
        several threads at once.

        Returns
        -------
        callable
            Maps a float32 batch of shape (n, 64, 64, 3) to (n, 1)
            probabilities; :meth:`eager_forward` itself when the network is
            not a Keras model on the TensorFlow backend (nothing to compile).
        """
        with self._compile_lock:
            # A graph holds the network it was traced from: rebuild it if
            # ``network`` was replaced since.
            if self._compiled is None or self._compiled[0] is not self.network:
                self._compiled = (self.network, self._build_compiled())
            return self._compiled[1]

    def _build_compiled(self):
        # Only a Keras model on the TensorFlow backend can be traced; a
        # stand-in network (tests, wrappers returning numpy) runs as it is.
        keras = sys.modules.get("keras")
        if keras is None or not isinstance(self.network, keras.Model) or (
                keras.backend.backend() != "tensorflow"):
            return self.eager_forward
        import tensorflow as tf

        spec = tf.TensorSpec((None, *self.network.input_shape[1:]), tf.float32)
        return tf.function(self.eager_forward, input_signature=[spec], reduce_retracing=True)

    def provenance(self):
        """Entries for the output table's ``meta``."""
        entries = {"model": self.name, "weights_sha256": self.weights_sha256,
                   "runtime": self.runtime}
        if self.tta:
            entries["tta"] = "mean of 8 flips and rotations"
        return entries


def keras_network_of(model):
    """The Keras network of an :class:`LSBGModel` (built if it scores via ONNX), or ``model``."""
    return model.keras_network() if isinstance(model, LSBGModel) else model


def load_model(model="des", runtime="auto"):
    """Load the bundled DeepShadows weights or a user's own.

    Parameters
    ----------
    model : str or path-like or LSBGModel
        ``"des"`` or ``"hsc"`` for the bundled weights; a ``.weights.h5``
        file (weights for the DeepShadows architecture); or a ``.keras``
        file (a whole model, loaded in Keras safe mode so no code stored
        in the file is ever run).
    runtime : {"auto", "onnx", "keras"}
        ``"auto"`` scores through ONNX Runtime when the weights have an ONNX
        twin (``X.onnx`` beside ``X.weights.h5``, its checksum in the model
        card ``X.json``; the bundled models have one), else through Keras;
        ``"onnx"`` requires the twin, ``"keras"`` ignores it.  An
        :class:`LSBGModel` is returned as it is.

    Returns
    -------
    LSBGModel

    Raises
    ------
    FileNotFoundError
        No such weights (or bundled weights missing), or
        ``runtime="onnx"`` and no twin.
    ModelLoadError
        The file cannot be loaded: damaged, not weights of the DeepShadows
        architecture, or a ``.keras`` file that needs code (refused).
    ValueError
        The twin's checksum is not the one in the model card, or it was
        exported from other weights.
    MissingExtraError
        Keras is needed (no twin, or ``runtime="keras"``) but not installed.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if isinstance(model, LSBGModel):
        return model
    if isinstance(model, str) and model.lower() in BUNDLED_MODELS:
        name = model.lower()
        path = bundled_weights_path(name)
        if not path.exists():
            raise FileNotFoundError(
                f"the bundled {name!r} weights are missing from this installation ({path.name});"
                " reinstall lsbg-classify"
            )
    else:
        path = Path(model)
        name = path.name
        if not path.exists():
            raise FileNotFoundError(f"model file {path} does not exist")
    sha, card = file_sha256(path), _read_card(path)
    twin = onnx_twin_path(path) if path.name.endswith(".weights.h5") else None
    if runtime != "keras" and twin is not None and twin.exists():
        network = _load_onnx_twin(path, twin, sha, card)
        return LSBGModel(network, name, sha, card, weights_path=path)
    if runtime == "onnx":
        expected = twin.name if twin is not None else "X.onnx beside X.weights.h5"
        raise FileNotFoundError(f"{path.name} has no ONNX twin (expected {expected})")
    try:
        network = _load_network(path)
    except MissingExtraError:
        raise
    except Exception as exc:  # untrusted file: any failure of the loader means unusable
        raise ModelLoadError(f"cannot load model {path}: {_first_line(exc)}") from None
    return LSBGModel(network, name, sha, card, weights_path=path)


class ModelLoadError(ValueError):
    """A model file exists but cannot be loaded (damaged, foreign or unsafe)."""


def _first_line(exc, limit=300):
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()),
                type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_onnx_twin(weights, twin, weights_sha256, card):
    """The twin as an :class:`OnnxNetwork`, after checking it belongs to ``weights``."""
    regenerate = f"regenerate it with: python -m lsbg_classify.training.onnx_export {weights}"
    recorded = card.get("onnx_sha256")
    actual = file_sha256(twin)
    if recorded != actual:
        raise ValueError(f"{twin.name}: checksum {actual[:12]}... is not the one its model card "
                         f"{card_path(weights).name} records ({str(recorded)[:12]}...); "
                         + regenerate)
    network = OnnxNetwork(twin)
    made_from = network.metadata.get("weights_sha256")
    if made_from != weights_sha256:
        raise ValueError(f"{twin.name} was exported from other weights than {weights.name}; "
                         + regenerate)
    return network


def _load_network(path):
    keras = import_keras()
    if path.name.endswith(".weights.h5"):
        network = build_deepshadows()
        network.load_weights(path)
        return network
    if path.suffix == ".keras":
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    raise ValueError(f"{path}: expected a '.weights.h5' or '.keras' file")


def _read_card(weights_path):
    path = card_path(weights_path)
    if path.exists():
        return json.loads(path.read_text())
    return {}


def dihedral_views(images):
    """The 8 flips and 90° rotations of a batch of images.

    Parameters
    ----------
    images : numpy.ndarray, shape (n, ny, nx, c)

    Yields
    ------
    numpy.ndarray
        Each view, shape (n, nx, ny, c) or (n, ny, nx, c); the first is the
        batch itself.
    """
    for flipped in (images, images[:, :, ::-1]):
        for k in range(4):
            yield np.rot90(flipped, k, axes=(1, 2))


def predict_tta(model, images, batch_size=None):
    """LSBG probability averaged over the 8 flips and rotations of each image.

    A sky cutout has no preferred orientation, so averaging the network's
    answers over them (test-time augmentation) removes the part of its
    output that depends on one.  Costs 8 network passes per image.

    Parameters
    ----------
    model : LSBGModel
    images : array_like, shape (n, 64, 64, 3)
        Model inputs (uint8, or float in [0, 1]).
    batch_size : int, optional
        Images per network call (default: the model's fastest).

    Returns
    -------
    numpy.ndarray, shape (n,), float32
    """
    return model.with_tta().predict(images, batch_size=batch_size)
