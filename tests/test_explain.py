"""Grad-CAM maps: shape and range, that they point at the evidence, and the CLI."""

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

from lsbg_classify.cli import main
from lsbg_classify.diagnostics.explain import gradcam, last_conv_layer, overlay, save_gradcam_png
from lsbg_classify.pipeline.model import load_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RED_BLOB = (15, 45)    # (row, column) of the blob in channel 0
GREEN_BLOB = (45, 15)  # and in channel 1


@pytest.fixture(scope="module")
def untrained(weights):
    return load_model(weights)


def _blob(centre, sigma=4.0):
    y, x = np.mgrid[:64, :64]
    return np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * sigma**2))


def _two_blobs():
    image = np.zeros((1, 64, 64, 3), np.float32)
    image[0, ..., 0] = _blob(RED_BLOB)
    image[0, ..., 1] = _blob(GREEN_BLOB)
    return image


def _colour_model(red_weight, green_weight, separate_sigmoid=False):
    """Conv channel 0 sees red, channel 1 green; the score is their weighted peaks.

    Pooling to 16×16 makes the feature map coarser than the input, as in
    DeepShadows, so the upsampling is exercised too.
    """
    import keras

    inputs = keras.Input((64, 64, 3))
    features = keras.layers.Conv2D(2, 1, use_bias=False, activation="relu", name="colour")(inputs)
    pooled = keras.layers.MaxPooling2D(4)(features)
    peak = keras.layers.GlobalMaxPooling2D()(pooled)
    if separate_sigmoid:
        output = keras.layers.Activation("sigmoid")(keras.layers.Dense(1)(peak))
    else:
        output = keras.layers.Dense(1, activation="sigmoid")(peak)
    model = keras.Model(inputs, output)
    model.get_layer("colour").set_weights([np.array([[[[1, 0], [0, 1], [0, 0]]]], np.float32)])
    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    dense.set_weights([np.array([[red_weight], [green_weight]], np.float32), np.zeros(1, np.float32)])
    return model


def _peak(cam):
    return np.unravel_index(np.argmax(cam), cam.shape)


def test_maps_of_deepshadows_have_the_input_shape_and_lie_in_0_1(untrained):
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    maps = gradcam(untrained, images)
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
    # Each map is scaled to peak at 1, or all zero when nothing raises the score
    # (which happens for some random initialisations of the untrained weights).
    peaks = maps.max(axis=(1, 2))
    # Whether a map is non-zero is up to the random weights; where the maps
    # point is tested with a constructed model below.
    assert maps.min() >= 0 and np.all(np.isclose(peaks, 1) | (peaks == 0))
    assert last_conv_layer(untrained.network).output.shape[1:3] == (16, 16)
    assert np.allclose(gradcam(untrained, images.astype(np.float32) / 255), maps, atol=1e-5)


def test_the_map_points_at_the_blob_that_raises_the_score():
    cam = gradcam(_colour_model(5.0, -5.0), _two_blobs())[0]
    assert np.hypot(*np.subtract(_peak(cam), RED_BLOB)) <= 4  # one feature-map pixel
    assert cam[GREEN_BLOB] < 0.05  # evidence against "LSBG" is cut by the ReLU
    flipped = gradcam(_colour_model(-5.0, 5.0), _two_blobs())[0]
    assert np.hypot(*np.subtract(_peak(flipped), GREEN_BLOB)) <= 4
    assert flipped[RED_BLOB] < 0.05


def test_a_saturated_probability_still_has_a_map():
    model = _colour_model(60.0, -30.0)
    assert float(np.asarray(model(_two_blobs()))[0, 0]) == 1.0  # sigmoid saturated in float32
    cam = gradcam(model, _two_blobs())[0]
    assert cam.max() == 1 and np.hypot(*np.subtract(_peak(cam), RED_BLOB)) <= 4


def test_a_network_without_a_sigmoid_dense_head_uses_its_output():
    cam = gradcam(_colour_model(2.0, -2.0, separate_sigmoid=True), _two_blobs())[0]
    assert np.hypot(*np.subtract(_peak(cam), RED_BLOB)) <= 4


def test_a_named_layer_and_bad_layers(untrained):
    images = np.zeros((1, 64, 64, 3), np.float32)
    name = untrained.network.layers[0].name  # the first convolution, 64×64
    assert gradcam(untrained, images, layer=name).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="feature map"):
        gradcam(untrained, images, layer=untrained.network.layers[-1].name)


def test_overlay_and_figure(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    maps = np.random.default_rng(2).uniform(0, 1, (4, 64, 64)).astype(np.float32)
    blended = overlay(images, maps)
    assert blended.shape == (4, 64, 64, 3) and 0 <= blended.min() and blended.max() <= 1
    path = tmp_path / "maps.png"
    save_gradcam_png(images, maps, path, captions=[f"row {k}" for k in range(4)], title="t")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="do not match"):
        overlay(images, maps[:, :32])
    with pytest.raises(ValueError, match="captions"):
        save_gradcam_png(images, maps, path, captions=["one"])


@pytest.fixture
def catalog(tmp_path):
    table = Table()
    table["ra"] = [10.0, 20.0, 30.0, 40.0] * u.deg
    table["dec"] = [-45.0, -50.0, -55.0, -42.0] * u.deg
    path = tmp_path / "cands.ecsv"
    table.write(path)
    return path


def _explain(catalog, weights, tmp_path, *extra):
    return main(["explain", str(catalog), "--backend", "simulated", "--model", weights,
                 "--cache", str(tmp_path / "cache"), "--quiet", *extra])


def test_cli_explain_draws_the_requested_rows(catalog, weights, tmp_path, capsys):
    out = tmp_path / "maps.png"
    assert _explain(catalog, weights, tmp_path, "--rows", "0,3", "-o", str(out)) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert "rows 0, 3" in capsys.readouterr().out.replace("row(s)", "rows")


def test_cli_explain_names_bad_rows(catalog, weights, tmp_path, capsys):
    out = tmp_path / "maps.png"
    assert _explain(catalog, weights, tmp_path, "--rows", "1,4,9", "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "4, 9" in err and "4 rows" in err and "Traceback" not in err
    assert _explain(catalog, weights, tmp_path, "--rows", "1,x", "-o", str(out)) == 2
    assert "'x'" in capsys.readouterr().err
    assert _explain(catalog, weights, tmp_path, "--rows", "1", "-o", str(tmp_path / "m.txt")) == 2
    assert ".png" in capsys.readouterr().err
    assert not out.exists()
