"""The ONNX twins: exported graphs score like the Keras networks they come from."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lsbg_classify.pipeline.model import (
    BUNDLED_MODELS,
    OnnxNetwork,
    bundled_weights_path,
    card_path,
    file_sha256,
    load_model,
    onnx_twin_path,
)
from lsbg_classify.training.onnx_export import main as export_main
from lsbg_classify.training.onnx_export import write_onnx_twin

# The real labelled DES development set, where the shared data is checked out.
DEV_SET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "des_real" / \
    "des_dev_119.npz"
TOLERANCE = 1e-5


def _random_images(n, seed):
    return np.random.default_rng(seed).uniform(0, 1, (n, 64, 64, 3)).astype(np.float32)


def _assert_same_scores(a, b, images):
    pa, pb = a.predict(images), b.predict(images)
    assert np.ptp(pa) > 1e-3  # distinct probabilities, so agreement means something
    assert np.max(np.abs(pa - pb)) <= TOLERANCE
    assert np.array_equal(pa >= 0.5, pb >= 0.5)


@pytest.fixture
def twinned(tmp_path, weights):
    """Untrained weights copied to a folder, with their ONNX twin written beside."""
    path = tmp_path / "mine.weights.h5"
    shutil.copyfile(weights, path)
    write_onnx_twin(path)
    return path


def test_export_writes_the_twin_and_records_its_checksum(twinned):
    twin = onnx_twin_path(twinned)
    card = json.loads(card_path(twinned).read_text())
    assert twin.name == "mine.onnx" and card["onnx_sha256"] == file_sha256(twin)
    model = load_model(twinned)
    assert model.runtime == "onnxruntime" and isinstance(model.network, OnnxNetwork)
    assert model.network.metadata["weights_sha256"] == model.weights_sha256
    assert model.provenance()["runtime"] == "onnxruntime"


def test_twin_scores_like_keras_on_random_images(twinned):
    onnx_model = load_model(twinned)
    keras_model = load_model(twinned, runtime="keras")
    assert keras_model.runtime == "keras"
    # 300 images: more than one ONNX call, the last one partial.
    _assert_same_scores(onnx_model, keras_model, _random_images(300, 1))
    uint8 = np.round(_random_images(5, 2) * 255).astype(np.uint8)
    assert np.max(np.abs(onnx_model.predict(uint8) - keras_model.predict(uint8))) <= TOLERANCE
    assert onnx_model.predict(uint8[:0]).shape == (0,)


def test_keras_network_of_an_onnx_model_is_built_from_its_weights(twinned):
    model = load_model(twinned)
    images = _random_images(6, 3)
    keras_prob = np.asarray(model.keras_network()(images, training=False)).reshape(-1)
    assert np.max(np.abs(model.predict(images) - keras_prob)) <= TOLERANCE
    assert model.keras_network() is model.keras_network()  # built once


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_bundled_twins_score_like_keras(name):
    onnx_model = load_model(name)
    assert onnx_model.runtime == "onnxruntime"
    assert onnx_model.card["onnx_sha256"] == file_sha256(onnx_twin_path(
        bundled_weights_path(name)))
    keras_model = load_model(name, runtime="keras")
    _assert_same_scores(onnx_model, keras_model, _random_images(64, 4))


@pytest.mark.skipif(not DEV_SET.exists(), reason="the real DES development set is not here")
@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_bundled_twins_score_like_keras_on_the_real_dev_set(name):
    with np.load(DEV_SET, allow_pickle=False) as data:
        images = data["X"].astype(np.float32) / 255.0
    assert images.shape[1:] == (64, 64, 3)
    _assert_same_scores(load_model(name), load_model(name, runtime="keras"), images)


def test_a_damaged_twin_is_refused_naming_the_fix(twinned):
    twin = onnx_twin_path(twinned)
    twin.write_bytes(twin.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ValueError, match=r"mine\.onnx: checksum .* regenerate it with: "
                                         r"python -m lsbg_classify\.training\.onnx_export"):
        load_model(twinned)
    assert load_model(twinned, runtime="keras").runtime == "keras"


def test_a_twin_of_other_weights_is_refused(twinned):
    import keras

    from lsbg_classify.pipeline.model import build_deepshadows

    # The weights are replaced, the twin and its card are left as they were.
    keras.utils.set_random_seed(7)
    build_deepshadows().save_weights(twinned)
    with pytest.raises(ValueError, match=r"mine\.onnx was exported from other weights than "
                                         r"mine\.weights\.h5; regenerate it"):
        load_model(twinned)


def test_runtime_choices(weights, twinned):
    with pytest.raises(FileNotFoundError, match=r"has no ONNX twin \(expected untrained\.onnx\)"):
        load_model(weights, runtime="onnx")
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_model(twinned, runtime="tensorrt")
    assert load_model(weights).runtime == "keras"  # no twin: Keras


def test_export_command_line_reports_bad_input(tmp_path, capsys):
    assert export_main([str(tmp_path / "absent.weights.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    wrong = tmp_path / "model.keras"
    wrong.write_bytes(b"")
    assert export_main([str(wrong)]) == 2
    assert "expected a '.weights.h5' file" in capsys.readouterr().err
