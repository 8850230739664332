import json
import threading

import numpy as np
import pytest

from lsbg_classify.pipeline.model import (
    BUNDLED_MODELS,
    CONV_FILTERS,
    LSBGModel,
    build_deepshadows,
    bundled_weights_path,
    load_model,
)


@pytest.fixture(scope="module")
def network():
    return build_deepshadows()


def test_architecture_is_the_papers_table_1(network):
    assert network.count_params() == 4_220_385
    convs = [layer for layer in network.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == list(CONV_FILTERS) == [16, 32, 64]
    for conv in convs:
        cfg = conv.get_config()
        assert cfg["kernel_size"] == (3, 3) and cfg["padding"] == "same" and cfg["strides"] == (1, 1)
        assert cfg["activation"] == "relu"
        assert conv.kernel_regularizer.get_config()["l2"] == pytest.approx(0.13)
    dense = [layer for layer in network.layers if layer.__class__.__name__ == "Dense"]
    assert [d.units for d in dense] == [1024, 1]
    assert dense[0].kernel_regularizer.get_config()["l2"] == pytest.approx(0.12)
    assert dense[1].get_config()["activation"] == "sigmoid"
    flatten = [layer for layer in network.layers if layer.__class__.__name__ == "Flatten"][0]
    assert flatten.output.shape[-1] == 4096
    drops = [layer.rate for layer in network.layers if layer.__class__.__name__ == "Dropout"]
    assert drops == [0.4, 0.4, 0.4]


def test_weights_round_trip_and_checksum(tmp_path, network):
    path = tmp_path / "mine.weights.h5"
    network.save_weights(path)
    model = load_model(path)
    images = np.random.default_rng(0).uniform(0, 1, (5, 64, 64, 3)).astype(np.float32)
    assert np.allclose(model.predict(images), LSBGModel(network, "x").predict(images), atol=1e-6)
    assert len(model.weights_sha256) == 64
    uint8 = np.round(images * 255).astype(np.uint8)
    probs = model.predict(uint8)
    assert probs.dtype == np.float32 and np.all((probs >= 0) & (probs <= 1))


def test_predict_rejects_wrong_shapes(network):
    with pytest.raises(ValueError, match="64, 64, 3"):
        LSBGModel(network, "x").predict(np.zeros((2, 32, 32, 3), np.float32))


def test_keras_file_with_code_is_refused_in_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((64, 64, 3))
    outputs = keras.layers.Lambda(lambda x: x[:, :1, :1, :1])(inputs)
    path = tmp_path / "evil.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="(?i)unsafe|lambda|safe_mode"):
        load_model(path)


def test_unknown_files_and_names():
    with pytest.raises(FileNotFoundError):
        load_model("no_such_model.weights.h5")
    with pytest.raises(ValueError):
        bundled_weights_path("sdss")


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_bundled_weights_are_trained_and_documented(name):
    model = load_model(name)
    card = model.card
    # A training record must ship beside the weights: never untrained weights.
    assert card["epochs_run"] >= 1 and card["n_train"] > 0
    assert card["weights_sha256"] == model.weights_sha256
    assert card["training_data"]
    json.dumps(card)


@pytest.fixture(scope="module")
def des_model():
    # The Keras path: the compiled TensorFlow graph is under test.
    return load_model("des", runtime="keras")


def test_compiled_path_gives_the_eager_probabilities(des_model):
    images = np.random.default_rng(3).uniform(0, 1, (13, 64, 64, 3)).astype(np.float32)
    eager = des_model.predict(images, batch_size=5, compiled=False)
    assert np.ptp(eager) > 1e-3  # distinct probabilities, so agreement means something
    # 13 images in batches of 5: the last batch is partial.
    compiled = des_model.predict(images, batch_size=5)
    assert compiled.dtype == np.float32 and compiled.shape == (13,)
    assert np.max(np.abs(compiled - eager)) <= 1e-5
    single = des_model.predict(images[:1])
    assert single.shape == (1,) and abs(single[0] - eager[0]) <= 1e-5
    uint8 = np.round(images * 255).astype(np.uint8)
    uint8_eager = des_model.predict(uint8, compiled=False)
    assert np.max(np.abs(des_model.predict(uint8) - uint8_eager)) <= 1e-5
    assert des_model.predict(images[:0]).shape == (0,)
    # One graph serves every batch size: traced once, not once per shape.
    assert des_model.compiled_forward().experimental_get_tracing_count() == 1


def test_compiled_path_is_built_once_across_threads(network):
    model = LSBGModel(network, "x")
    images = np.random.default_rng(4).uniform(0, 1, (8, 64, 64, 3)).astype(np.float32)
    expected = model.predict(images, compiled=False)
    results = [None] * 4

    def score(i):
        results[i] = model.predict(images[i:], batch_size=3)

    threads = [threading.Thread(target=score, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, probs in enumerate(results):
        assert np.max(np.abs(probs - expected[i:])) <= 1e-5
    assert model.compiled_forward().experimental_get_tracing_count() == 1


def test_compiled_path_checks_inputs_like_the_eager_one(network):
    model = LSBGModel(network, "x")
    for compiled in (True, False):
        with pytest.raises(ValueError, match=r"expected images of shape \(n, 64, 64, 3\)"):
            model.predict(np.zeros((64, 64, 3), np.float32), compiled=compiled)
        with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
            model.predict(np.zeros((1, 64, 64, 3), np.float32), batch_size=0, compiled=compiled)


def test_a_network_that_is_not_keras_runs_as_it_is():
    class Halves:
        input_shape = (None, 64, 64, 3)

        def __call__(self, images, training=False):
            return np.full((len(images), 1), 0.5, np.float32)

    model = LSBGModel(Halves(), "stand-in")
    assert model.compiled_forward() == model.eager_forward
    assert np.array_equal(model.predict(np.zeros((3, 64, 64, 3), np.float32)), [0.5, 0.5, 0.5])
