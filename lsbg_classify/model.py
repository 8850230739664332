"""The DeepShadows convolutional network and its bundled weights.

Architecture and optimiser follow Table 1 and Section 4 of Tanoglidis,
Ćiprijanović & Drlica-Wagner (2021, Astronomy & Computing 35, 100469).
"""

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
    "BUNDLED_MODELS",
    "build_deepshadows",
    "compile_deepshadows",
    "LSBGModel",
    "ModelLoadError",
    "load_model",
    "bundled_weights_path",
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

# Images per network call.  With the compiled graph, 64 images ran 1.1-1.3x
# faster than 256 on a 2-core CPU with 8 MiB of L3 cache (docs/pipeline.rst,
# Performance): the first layer's output for 64 images (16 MiB) stays near
# the cache, for 256 it does not.
PREDICT_BATCH = 64


def import_keras():
    """Import Keras (and TensorFlow) on first use, quietly.

    Importing TensorFlow costs seconds; keeping it out of
    ``import lsbg_classify`` keeps the command line quick to start.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


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


def file_sha256(path):
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LSBGModel:
    """A trained classifier: Keras network plus where it came from.

    Parameters
    ----------
    network : keras.Model
        Maps (n, 64, 64, 3) images in [0, 1] to (n, 1) LSBG probabilities.
    name : str
        ``"des"``, ``"hsc"`` or the file name of user weights.
    weights_sha256 : str
        Checksum of the weights file, for provenance.
    card : dict
        Training record shipped beside the weights (may be empty).
    """

    def __init__(self, network, name, weights_sha256="", card=None):
        self.network = network
        self.name = name
        self.weights_sha256 = weights_sha256
        self.card = card or {}
        # (network, compiled forward pass), built on the first predict.
        self._compiled = None
        self._compile_lock = threading.Lock()

    def predict(self, images, batch_size=PREDICT_BATCH, compiled=True):
        """LSBG probability for each image.

        Parameters
        ----------
        images : array_like, shape (n, 64, 64, 3)
            Model inputs in [0, 1] (uint8 arrays are divided by 255).
        batch_size : int
            Images per network call.
        compiled : bool
            Run the network as a TensorFlow graph (:meth:`compiled_forward`,
            the default: faster, same probabilities to float32 rounding) or
            call it eagerly, layer by layer.

        Returns
        -------
        numpy.ndarray, shape (n,), float32
        """
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        images = np.asarray(images)
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 255.0
        images = images.astype(np.float32, copy=False)
        if images.ndim != 4 or images.shape[1:] != tuple(self.network.input_shape[1:]):
            raise ValueError(
                f"expected images of shape (n, {', '.join(map(str, self.network.input_shape[1:]))}),"
                f" got {images.shape}"
            )
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
        return {"model": self.name, "weights_sha256": self.weights_sha256}


def load_model(model="des"):
    """Load the bundled DeepShadows weights or a user's own.

    Parameters
    ----------
    model : str or path-like or LSBGModel
        ``"des"`` or ``"hsc"`` for the bundled weights; a ``.weights.h5``
        file (weights for the DeepShadows architecture); or a ``.keras``
        file (a whole model, loaded in Keras safe mode so no code stored
        in the file is ever run).

    Returns
    -------
    LSBGModel

    Raises
    ------
    FileNotFoundError
        No such file (or bundled weights missing).
    ModelLoadError
        The file cannot be loaded: damaged, not weights of the DeepShadows
        architecture, or a ``.keras`` file that needs code (refused).
    """
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
    try:
        network = _load_network(path)
    except Exception as exc:  # untrusted file: any failure of the loader means unusable
        raise ModelLoadError(f"cannot load model {path}: {_first_line(exc)}") from None
    return LSBGModel(network, name, file_sha256(path), _read_card(path))


class ModelLoadError(ValueError):
    """A model file exists but cannot be loaded (damaged, foreign or unsafe)."""


def _first_line(exc, limit=300):
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()),
                type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    card_path = Path(str(weights_path).removesuffix(".weights.h5") + ".json")
    if card_path.exists():
        return json.loads(card_path.read_text())
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


def predict_tta(model, images, batch_size=PREDICT_BATCH):
    """LSBG probability averaged over the 8 flips and rotations of each image.

    A sky cutout has no preferred orientation, so averaging the network's
    answers over them (test-time augmentation) removes the part of its
    output that depends on one.  Costs 8 network passes per image.

    Parameters
    ----------
    model : LSBGModel
    images : array_like, shape (n, 64, 64, 3)
        Model inputs (uint8, or float in [0, 1]).
    batch_size : int
        Images per network call.

    Returns
    -------
    numpy.ndarray, shape (n,), float32
    """
    images = np.asarray(images)
    total = np.zeros(len(images), np.float64)
    for view in dihedral_views(images):
        total += model.predict(np.ascontiguousarray(view), batch_size=batch_size)
    return (total / 8).astype(np.float32)
