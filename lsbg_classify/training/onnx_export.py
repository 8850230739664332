"""Write DeepShadows weights as an ONNX inference graph (the model's "ONNX twin").

The bundled models ship twice: as Keras weights (``des.weights.h5``, for
training, fine-tuning, Grad-CAM and Monte-Carlo dropout) and as an ONNX
graph beside them (``des.onnx``) that :func:`~lsbg_classify.pipeline.model.load_model`
runs with ONNX Runtime, so that scoring needs neither TensorFlow nor Keras.
The checksum of the ``.onnx`` file is recorded in the model card
(``des.json``) and checked at load.

The graph is written node by node from the Keras layer weights with the
``onnx`` package's helper API.  It is the inference pass: dropout is the
identity and batch normalisation uses the moving averages.  Keras works
channels-last (NHWC) and ONNX convolutions channels-first (NCHW): the graph
transposes its input once, and the rows of the first dense layer's kernel
are permuted so that flattening (C, H, W) feeds each weight the activation
Keras's flattening of (H, W, C) fed it.

Regenerate the twins after replacing weights::

    python -m lsbg_classify.training.onnx_export                   # the bundled models
    python -m lsbg_classify.training.onnx_export my/best.weights.h5

Needs Keras (``pip install "lsbg-classify[train]"``) and ``onnx``.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..pipeline.model import (
    BUNDLED_MODELS,
    INPUT_SHAPE,
    build_deepshadows,
    bundled_weights_path,
    card_path,
    file_sha256,
    onnx_twin_path,
)
from ..version import __version__

__all__ = ["ONNX_OPSET", "EXPORT_TOLERANCE", "network_to_onnx", "export_onnx", "write_onnx_twin",
           "main"]

#: Operator set of the written graphs.  Every operator used (Conv, Relu,
#: BatchNormalization, MaxPool, Flatten, Gemm, Sigmoid, Transpose) has had
#: its present form since opset 15 or earlier, so older runtimes read it too.
ONNX_OPSET = 17
# IR version 8 is the one that goes with opset 17.
_IR_VERSION = 8
#: Largest difference of probabilities allowed between the exported graph
#: and the Keras network on the check images before an export is refused.
EXPORT_TOLERANCE = 1e-5
# Random images the export is checked on.
_CHECK_IMAGES = 16


class _Graph:
    """Accumulates nodes and initialisers with unique names."""

    def __init__(self, helper, numpy_helper):
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes = []
        self.initializers = []
        self.count = 0

    def constant(self, name, array):
        name = f"{name}_{self.count}"
        self.count += 1
        self.initializers.append(
            self.numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def node(self, op, inputs, **attributes):
        output = f"{op.lower()}_{self.count}"
        self.count += 1
        self.nodes.append(self.helper.make_node(op, inputs, [output], **attributes))
        return output


def _activation(graph, x, layer):
    name = layer.get_config().get("activation", "linear")
    if name == "relu":
        return graph.node("Relu", [x])
    if name == "sigmoid":
        return graph.node("Sigmoid", [x])
    if name == "linear":
        return x
    raise ValueError(f"layer {layer.name!r}: activation {name!r} is not supported by the exporter")


def _conv(graph, x, layer):
    config = layer.get_config()
    if config["padding"] != "same" or tuple(config["strides"]) != (1, 1) or tuple(
            config["dilation_rate"]) != (1, 1) or config.get("groups", 1) != 1:
        raise ValueError(f"layer {layer.name!r}: only stride-1, undilated 'same' convolutions "
                         "are supported by the exporter")
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    kh, kw = kernel.shape[:2]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"layer {layer.name!r}: 'same' padding of an even kernel is asymmetric; "
                         "not supported by the exporter")
    # Keras kernels are (kh, kw, in, out); ONNX wants (out, in, kh, kw).
    weights = graph.constant("conv_w", kernel.transpose(3, 2, 0, 1))
    bias = graph.constant("conv_b", bias)
    x = graph.node("Conv", [x, weights, bias], kernel_shape=[kh, kw],
                   pads=[kh // 2, kw // 2, kh // 2, kw // 2], strides=[1, 1])
    return _activation(graph, x, layer)


def _batch_norm(graph, x, layer):
    gamma, beta, mean, variance = (np.asarray(w) for w in layer.get_weights())
    inputs = [x] + [graph.constant(n, a) for n, a in
                    (("bn_scale", gamma), ("bn_bias", beta), ("bn_mean", mean),
                     ("bn_var", variance))]
    return graph.node("BatchNormalization", inputs, epsilon=float(layer.epsilon))


def _max_pool(graph, x, layer):
    config = layer.get_config()
    pool = tuple(config["pool_size"])
    strides = tuple(config["strides"] or pool)
    if config["padding"] != "valid":
        raise ValueError(f"layer {layer.name!r}: only 'valid' max pooling is supported")
    return graph.node("MaxPool", [x], kernel_shape=list(pool), strides=list(strides))


def _dense(graph, x, layer, row_order=None):
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    if row_order is not None:
        kernel = kernel[row_order]
    x = graph.node("Gemm", [x, graph.constant("dense_w", kernel), graph.constant("dense_b", bias)])
    return _activation(graph, x, layer)


def _flatten_row_order(shape):
    """Keras (H, W, C) flat index of each ONNX (C, H, W) flat index."""
    h, w, c = shape
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)


def network_to_onnx(network, weights_sha256=""):
    """The inference graph of a DeepShadows-like Keras network, as an ONNX model.

    Parameters
    ----------
    network : keras.Sequential
        Conv2D ('same', stride 1), BatchNormalization, MaxPooling2D,
        Dropout, Flatten and Dense layers, channels-last, as
        :func:`~lsbg_classify.pipeline.model.build_deepshadows` makes.
    weights_sha256 : str
        Checksum of the weights file, stored in the graph's metadata so
        that a twin can be matched to its weights.

    Returns
    -------
    onnx.ModelProto
        Input ``images`` (n, 64, 64, 3) float32 in [0, 1], output ``prob``
        (n, 1) float32.

    Raises
    ------
    ValueError
        A layer the exporter does not know.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = _Graph(helper, numpy_helper)
    input_shape = tuple(int(s) for s in network.input_shape[1:])
    x = graph.node("Transpose", ["images"], perm=[0, 3, 1, 2])
    row_order = None
    for layer in network.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind == "Conv2D":
            x = _conv(graph, x, layer)
        elif kind == "BatchNormalization":
            x = _batch_norm(graph, x, layer)
        elif kind == "MaxPooling2D":
            x = _max_pool(graph, x, layer)
        elif kind == "Dropout":
            continue  # the identity at inference
        elif kind == "Flatten":
            row_order = _flatten_row_order(tuple(int(s) for s in layer.input.shape[1:]))
            x = graph.node("Flatten", [x], axis=1)
        elif kind == "Dense":
            x = _dense(graph, x, layer, row_order)
            row_order = None
        else:
            raise ValueError(f"layer {layer.name!r} of type {kind} is not supported by the "
                             "exporter")
    graph.nodes[-1].output[0] = "prob"
    onnx_graph = helper.make_graph(
        graph.nodes, "deepshadows",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", *input_shape])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["n", 1])],
        initializer=graph.initializers)
    model = helper.make_model(onnx_graph, producer_name="lsbg-classify",
                              producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = _IR_VERSION
    helper.set_model_props(model, {"weights_sha256": weights_sha256,
                                   "input": "NHWC float32 images in [0, 1]",
                                   "output": "LSBG probability"})
    onnx.checker.check_model(model, full_check=True)
    return model


def _check_against_keras(network, blob):
    import onnxruntime

    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).uniform(0, 1, (_CHECK_IMAGES, *INPUT_SHAPE))
    images = images.astype(np.float32)
    expected = np.asarray(network(images, training=False)).reshape(-1)
    got = session.run(None, {"images": images})[0].reshape(-1)
    worst = float(np.max(np.abs(got - expected)))
    if not worst <= EXPORT_TOLERANCE:
        raise RuntimeError(f"the exported graph's probabilities differ from Keras's by {worst:.2e}"
                           f" (more than {EXPORT_TOLERANCE:g}); not written")
    return worst


def export_onnx(weights_path, onnx_path):
    """Write the ONNX inference graph of DeepShadows weights.

    The graph is run by ONNX Runtime on random images and compared with
    the Keras network before it is written (atomically).

    Parameters
    ----------
    weights_path : path-like
        ``.weights.h5`` file of the DeepShadows architecture.
    onnx_path : path-like
        Where the ``.onnx`` file is written (replaced if it exists).

    Returns
    -------
    str
        SHA-256 (hex) of the written file.

    Raises
    ------
    FileNotFoundError
        ``weights_path`` does not exist.
    RuntimeError
        The graph's probabilities differ from Keras's by more than
        :data:`EXPORT_TOLERANCE`.
    """
    weights_path = Path(weights_path)
    if not weights_path.exists():
        raise FileNotFoundError(f"weights file {weights_path} does not exist")
    if not weights_path.name.endswith(".weights.h5"):
        raise ValueError(f"{weights_path}: expected a '.weights.h5' file")
    network = build_deepshadows()
    network.load_weights(weights_path)
    blob = network_to_onnx(network, file_sha256(weights_path)).SerializeToString()
    _check_against_keras(network, blob)
    atomic_write_bytes(onnx_path, blob)
    return file_sha256(onnx_path)


def write_onnx_twin(weights_path):
    """Write the ONNX twin beside weights and record its checksum in the model card.

    ``des.weights.h5`` gets ``des.onnx``, and ``des.json`` (created if
    absent) gets ``onnx_sha256``; :func:`~lsbg_classify.pipeline.model.load_model`
    then scores through ONNX Runtime.

    Parameters
    ----------
    weights_path : path-like
        ``.weights.h5`` file.

    Returns
    -------
    pathlib.Path
        The ``.onnx`` file.
    """
    weights_path = Path(weights_path)
    twin = onnx_twin_path(weights_path)
    card_file = card_path(weights_path)
    sha = export_onnx(weights_path, twin)
    card = json.loads(card_file.read_text()) if card_file.exists() else {}
    card["onnx_sha256"] = sha
    card["onnx_opset"] = ONNX_OPSET
    atomic_write_bytes(card_file, json.dumps(card, indent=1).encode())
    return twin


def main(argv=None):
    """``python -m lsbg_classify.training.onnx_export [WEIGHTS ...]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m lsbg_classify.training.onnx_export",
        description="Write the ONNX twin (X.onnx) of DeepShadows weights (X.weights.h5) and "
                    "record its checksum in the model card (X.json).")
    parser.add_argument("weights", nargs="*",
                        help=f"weights files (default: the bundled {', '.join(BUNDLED_MODELS)})")
    args = parser.parse_args(argv)
    paths = args.weights or [bundled_weights_path(name) for name in BUNDLED_MODELS]
    try:
        for path in paths:
            print(f"wrote {write_onnx_twin(path)}")
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
