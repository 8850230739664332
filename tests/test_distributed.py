"""Partition-by-partition classification on a local Dask cluster (Dask DataFrame and LSDB)."""

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from lsbg_classify import classify_catalog
from lsbg_classify.pipeline.partitions import PARTITION_DTYPES

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
lsdb = pytest.importorskip("lsdb")

ROWS = 24


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture
def frame():
    rng = np.random.default_rng(5)
    return pd.DataFrame({"obj": np.arange(ROWS), "ra": rng.uniform(0, 60, ROWS),
                         "dec": rng.uniform(-60, -40, ROWS)})


def _reference(frame, weights, cache):
    return classify_catalog(Table.from_pandas(frame), backend="simulated", model=weights,
                            cache=cache, progress=False)


@pytest.mark.slow
def test_dask_dataframe_on_a_local_cluster_matches_the_table_path(client, frame, weights, tmp_path):
    ddf = dd.from_pandas(frame, npartitions=3)
    lazy = classify_catalog(ddf, backend="simulated", model=weights, cache=tmp_path / "cache")
    assert isinstance(lazy, dd.DataFrame)
    result = lazy.compute().sort_values("obj")
    assert list(result.columns) == list(frame.columns) + list(PARTITION_DTYPES)
    assert {str(t) for t in result.dtypes[list(PARTITION_DTYPES)]} == {"float32", "Int8", "string"}
    reference = _reference(frame, weights, tmp_path / "cache")
    assert np.allclose(result["lsbg_prob"].to_numpy(), np.asarray(reference["lsbg_prob"]), atol=1e-6)
    assert list(result["lsbg_status"]) == ["ok"] * ROWS
    # Both worker processes took part and shared one cutout cache.
    assert len(client.scheduler_info()["workers"]) == 2
    assert len(list((tmp_path / "cache").rglob("*.cutout"))) == ROWS


@pytest.mark.slow
def test_lsdb_catalog_stays_an_lsdb_catalog_and_writes_hats(client, frame, weights, tmp_path):
    catalog = lsdb.from_dataframe(frame, ra_column="ra", dec_column="dec", lowest_order=2)
    scored = classify_catalog(catalog, backend="simulated", model=weights, cache=tmp_path / "cache")
    assert isinstance(scored, lsdb.Catalog)
    scored.to_hats(tmp_path / "scored_hats")
    back = lsdb.open_catalog(tmp_path / "scored_hats").compute().sort_values("obj")
    reference = _reference(frame, weights, tmp_path / "cache")
    assert len(back) == ROWS
    assert np.allclose(back["lsbg_prob"].to_numpy(dtype=float), np.asarray(reference["lsbg_prob"]),
                       atol=1e-6)


def test_model_objects_cannot_be_shipped_to_workers(frame, weights):
    from lsbg_classify.pipeline.model import load_model

    with pytest.raises(TypeError, match="path"):
        classify_catalog(dd.from_pandas(frame, npartitions=2), backend="simulated",
                         model=load_model(weights))
