"""Monte-Carlo dropout: the function, and the pipeline's opt-in column."""

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from lsbg_classify import classify_catalog
from lsbg_classify.cli import main
from lsbg_classify.pipeline.catalog.read import PROVENANCE_KEY, CatalogError, read_catalog
from lsbg_classify.pipeline.checkpoint import CheckpointMismatchError, score_in_chunks
from lsbg_classify.pipeline.model import load_model
from lsbg_classify.pipeline.options import MC_STD_COLUMN
from lsbg_classify.pipeline.partitions import classify_partition
from lsbg_classify.pipeline.uncertainty import apply_temperature, mc_dropout_predict
from lsbg_classify.surveys import get_backend


@pytest.fixture(scope="module")
def untrained(weights):
    return load_model(weights)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)


@pytest.fixture
def candidates():
    table = Table()
    table["RA"] = [10.5, 20.25, 400.0, 40.0] * u.deg  # row 2 is invalid
    table["DEC"] = [-45.0, -50.5, -40.0, -55.0] * u.deg
    return table


def _batch_norm(network):
    import keras

    return [layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_spread_is_positive_and_reproducible_with_a_seed(untrained, images):
    mean, std = mc_dropout_predict(untrained, images, n_samples=8, seed=1)
    assert mean.shape == std.shape == (4,)
    assert mean.dtype == std.dtype == np.float32
    assert np.all(std > 0) and np.all((mean > 0) & (mean < 1))
    again = mc_dropout_predict(untrained, images, n_samples=8, seed=1)
    other = mc_dropout_predict(untrained, images, n_samples=8, seed=2)
    assert np.array_equal(std, again[1]) and np.array_equal(mean, again[0])
    assert not np.array_equal(std, other[1])
    unseeded = [mc_dropout_predict(untrained, images, n_samples=8, seed=None)[1] for _ in range(2)]
    assert not np.array_equal(*unseeded)  # fresh masks each time


def test_uint8_and_float_inputs_agree(untrained, images):
    from_uint8 = mc_dropout_predict(untrained, images, n_samples=4, seed=0)
    from_float = mc_dropout_predict(untrained, images.astype(np.float32) / 255, n_samples=4, seed=0)
    assert np.allclose(from_uint8, from_float, atol=1e-6)


def test_batch_norm_is_neither_used_in_training_mode_nor_updated(untrained, images):
    norms = _batch_norm(untrained.network)
    assert norms, "DeepShadows has batch normalisation: the case this test is about"
    before = [layer.moving_mean.numpy() for layer in norms]
    mc_dropout_predict(untrained, images, n_samples=3)
    assert all(np.array_equal(b, layer.moving_mean.numpy()) for b, layer in zip(before, norms))
    assert all(layer.trainable for layer in norms)  # put back as they were


def test_only_dropout_is_random_so_the_mean_matches_a_linear_network():
    import keras

    # BatchNorm with moving statistics far from any batch's own, then dropout,
    # then a linear read-out: the expectation over dropout masks is exactly
    # the deterministic output, but only if batch norm stays in inference mode.
    inputs = keras.Input((2, 2, 1))
    x = keras.layers.BatchNormalization()(inputs)
    x = keras.layers.Dropout(0.5)(keras.layers.Flatten()(x))
    network = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(x))
    norm = network.layers[1]
    norm.set_weights([np.ones(1), np.zeros(1), np.full(1, 3.0), np.full(1, 4.0)])
    network.layers[-1].set_weights([np.full((4, 1), 0.25, np.float32)])
    images = np.random.default_rng(0).uniform(0, 1, (3, 2, 2, 1)).astype(np.float32)
    deterministic = np.asarray(network(images, training=False)).ravel()
    # 1000 copies of each image in one batch, 4 passes each: 4000 masks per image.
    copies = np.repeat(images, 1000, axis=0)
    mean, std = mc_dropout_predict(network, copies, n_samples=4, batch_size=len(copies), seed=0)
    mean, std = mean.reshape(3, 1000).mean(axis=1), std.reshape(3, 1000).mean(axis=1)
    assert np.all(std > 0)
    assert np.allclose(mean, deterministic, atol=4 * std.max() / np.sqrt(4000))
    # Batch statistics would centre these inputs near 0 instead of near -1.5.
    assert np.all(deterministic < -1)


def test_bad_arguments_are_named(untrained, images):
    import keras

    with pytest.raises(ValueError, match="shape"):
        mc_dropout_predict(untrained, images[:, :32], n_samples=3)
    with pytest.raises(ValueError, match="n_samples"):
        mc_dropout_predict(untrained, images, n_samples=1)
    inputs = keras.Input((64, 64, 3))
    no_dropout = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="no Dropout"):
        mc_dropout_predict(no_dropout, images, n_samples=3)


def test_temperature_applies_to_every_sample(untrained, images):
    plain_mean, plain_std = mc_dropout_predict(untrained, images, n_samples=5, seed=0)
    mean, std = mc_dropout_predict(untrained, images, n_samples=5, seed=0, temperature=3.0)
    # Scaling pulls every sample towards 0.5, so the mean moves towards it and the spread shrinks.
    assert np.all(np.abs(mean - 0.5) < np.abs(plain_mean - 0.5))
    assert np.all(std < plain_std)


# -- the pipeline's opt-in column ------------------------------------------------


@pytest.mark.filterwarnings("ignore:1 of 4 rows have invalid positions")
def test_classify_catalog_adds_the_spread_and_keeps_the_deterministic_probability(
        candidates, untrained):
    options = dict(backend="simulated", model=untrained, cache=False, progress=False,
                   on_invalid="flag")
    plain = classify_catalog(candidates, **options)
    scored = classify_catalog(candidates, mc_samples=4, **options)
    assert scored.colnames == ["RA", "DEC", "lsbg_prob", MC_STD_COLUMN, "lsbg_class",
                               "lsbg_status"]
    std = scored[MC_STD_COLUMN]
    assert std.dtype == np.float32
    assert list(std.mask) == [False, False, True, False]
    assert np.all(std.compressed() > 0)
    assert np.allclose(scored["lsbg_prob"].filled(np.nan), plain["lsbg_prob"].filled(np.nan),
                       atol=1e-6, equal_nan=True)
    meta = scored.meta[PROVENANCE_KEY]
    assert meta["mc_dropout_samples"] == 4 and "temperature" not in meta
    assert MC_STD_COLUMN not in plain.colnames and "mc_dropout_samples" not in plain.meta[
        PROVENANCE_KEY]


@pytest.mark.filterwarnings("ignore:1 of 4 rows have invalid positions")
def test_classify_catalog_applies_and_records_a_temperature(candidates, untrained):
    options = dict(backend="simulated", model=untrained, cache=False, progress=False,
                   on_invalid="flag")
    plain = classify_catalog(candidates, **options)
    scaled = classify_catalog(candidates, temperature=2.5, **options)
    expected = apply_temperature(plain["lsbg_prob"].filled(np.nan), 2.5)
    assert np.allclose(scaled["lsbg_prob"].filled(np.nan), expected, atol=1e-6, equal_nan=True)
    assert scaled.meta[PROVENANCE_KEY]["temperature"] == 2.5


def test_classify_catalog_refuses_bad_options_before_any_work(candidates):
    with pytest.raises(ValueError, match="mc_samples"):
        classify_catalog(candidates, backend="simulated", mc_samples=1)
    with pytest.raises(ValueError, match="temperature"):
        classify_catalog(candidates, backend="simulated", temperature=0)
    taken = candidates.copy()
    taken[MC_STD_COLUMN] = 0.0
    with pytest.raises(CatalogError, match=MC_STD_COLUMN):
        classify_catalog(taken, backend="simulated", mc_samples=3)


def test_checkpoints_keep_the_spread_and_refuse_other_settings(tmp_path, untrained):
    backend = get_backend("simulated")
    ra, dec = np.array([10.0, 20.0, 30.0]), np.array([-45.0, -45.0, -45.0])
    options = dict(chunk_size=2, cache=False, progress=False)
    prob, st, std = score_in_chunks(ra, dec, backend, untrained, tmp_path / "ck", mc_samples=3,
                                    **options)
    assert list(st) == ["ok"] * 3 and np.all(std > 0)
    with np.load(tmp_path / "ck" / "chunk-000000000000.npz") as chunk:
        assert np.array_equal(chunk["std"], std[:2])
    again = score_in_chunks(ra, dec, backend, untrained, tmp_path / "ck", mc_samples=3, **options)
    assert np.array_equal(again[2], std) and np.array_equal(again[0], prob)
    for other in (dict(mc_samples=5), dict(), dict(mc_samples=3, temperature=2.0)):
        with pytest.raises(CheckpointMismatchError, match="Monte-Carlo"):
            score_in_chunks(ra, dec, backend, untrained, tmp_path / "ck", **other, **options)


def test_a_plain_checkpoint_keeps_its_old_manifest(tmp_path, untrained):
    import json

    backend = get_backend("simulated")
    result = score_in_chunks(np.array([10.0]), np.array([-45.0]), backend, untrained,
                             tmp_path / "ck", cache=False, progress=False)
    assert len(result) == 2
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert set(manifest) == {"fingerprint", "rows", "chunk_size"}


def test_classify_partition_adds_a_float32_spread_column(weights):
    frame = pd.DataFrame({"ra": [10.0, 20.0], "dec": [-45.0, -50.0]})
    out = classify_partition(frame, backend="simulated", model=weights, cache=False,
                             mc_samples=3)
    assert list(out.columns) == ["ra", "dec", "lsbg_prob", "lsbg_class", "lsbg_status",
                                 MC_STD_COLUMN]
    assert str(out[MC_STD_COLUMN].dtype) == "float32" and (out[MC_STD_COLUMN] > 0).all()


def test_cli_classify_mc_samples_and_temperature(tmp_path, weights):
    path = tmp_path / "c.csv"
    path.write_text("ra,dec\n10.0,-45.0\n20.0,-50.0\n")
    out = tmp_path / "o.ecsv"
    assert main(["classify", str(path), "-o", str(out), "--backend", "simulated", "--model",
                 weights, "--no-cache", "--quiet", "--mc-samples", "3",
                 "--temperature", "1.5"]) == 0
    scored = read_catalog(out)  # gathers the ECSV's flat LSBG_CLASSIFY.<key> entries
    assert MC_STD_COLUMN in scored.colnames and np.all(scored[MC_STD_COLUMN] > 0)
    assert scored.meta[PROVENANCE_KEY]["temperature"] == 1.5
    assert scored.meta[PROVENANCE_KEY]["mc_dropout_samples"] == 3
