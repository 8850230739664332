"""``lsbg-classify reproduce``: downloads, labels, resumable steps, report.

Everything runs offline: a :class:`~lsbg_classify.testing.loopback.LoopbackFileHost`
serves synthetic coordinate lists in the formats of the paper's repository,
whose labels are the simulated sky's (``simulation.truth_label``), so the
loopback viewer's cutouts match them.
"""

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from lsbg_classify.cli import main
from lsbg_classify.reproduction import reproduce as rp
from lsbg_classify.reproduction.baselines import load_greco2018
from lsbg_classify.simulation.conditions import truth_label
from lsbg_classify.testing.loopback import LoopbackFileHost

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PER_CLASS = 5  # the smallest --subset: the SVM's Platt scaling needs 5 per class
SKY_SEED = 0  # the loopback viewer's sky


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _positions(label, n, rng):
    """``n`` positions where the simulated sky has a candidate of class ``label``."""
    found = []
    while len(found) < n:
        ra, dec = round(rng.uniform(10, 60), 6), round(rng.uniform(-50, -5), 6)
        if truth_label(ra, dec, SKY_SEED) == label:
            found.append((ra, dec))
    return found


def _split_csv(rows):
    lines = [",ra,dec"] + [f"{i},{ra},{dec}" for i, (ra, dec) in enumerate(rows)]
    return ("\n".join(lines) + "\n").encode()


def _master_csv(rows, rng, offset):
    # SourceExtractor-like columns under names the features code knows.
    lines = ["ra,dec,mag_auto_g,mag_auto_r,mag_auto_i,mu_max_model_g,ellipticity"]
    for ra, dec in rows:
        g = 20 + offset + rng.normal(0, 0.3)
        lines.append(f"{ra},{dec},{g:.3f},{g - 0.5:.3f},{g - 0.8:.3f},{g + 4:.3f},"
                     f"{rng.uniform(0, 0.6):.3f}")
    return ("\n".join(lines) + "\n").encode()


def _hsc_files(rng, n):
    lsbgs, artifacts = _positions(1, n, rng), _positions(0, n, rng)
    dat = "\n".join(
        " ".join(str(v) for v in (i + 1, ra, dec, 24.5, 0.1, 20.0, 0.05, 0.5, 0.7, 3.0, 0.2,
                                  0.8, 0.05, 0.2, 0.02, 0.05, 0.04, 0.03))
        for i, (ra, dec) in enumerate(lsbgs))
    csv = "ra,dec,mu_0,m_tot,r_e,n,ell,g-i,g-r,A_g,A_r,A_i\n" + "\n".join(
        f"{ra},{dec},24.0,19.5,2.5,1.0,0.3,0.9,0.6,0.05,0.04,0.03" for ra, dec in artifacts)
    return {"hsc_LSBGs.dat": (dat + "\n").encode(), "hsc_artifacts.csv": (csv + "\n").encode()}


def synthetic_files(seed=1):
    """Every data file, small: PER_CLASS per class per split, one stray test row."""
    rng = np.random.default_rng(seed)
    files, lsbgs, artifacts = {}, [], []
    for split, name in rp.SPLIT_FILES.items():
        lsbg, artifact = _positions(1, PER_CLASS, rng), _positions(0, PER_CLASS, rng)
        lsbgs += lsbg
        artifacts += artifact
        stray = [(5.0, -20.0)] if split == "test" else []  # in neither master list
        files[name] = _split_csv(lsbg + artifact + stray)
    files[rp.LSBG_LIST] = _master_csv(lsbgs, rng, 1.0)
    files[rp.ARTIFACT_LIST] = _master_csv(artifacts, rng, 0.0)
    files.update(_hsc_files(rng, 2 * PER_CLASS))
    return files


@pytest.fixture(scope="module")
def files():
    return synthetic_files()


@pytest.fixture
def host(files):
    with LoopbackFileHost(files) as server:
        yield server


@pytest.fixture
def pinned_to(monkeypatch):
    """Make the pinned digests those of given files (the CLI has no checksum option)."""
    def pin(files):
        for name in rp.PINNED_SHA256:
            monkeypatch.setitem(rp.PINNED_SHA256, name, _sha(files[name]))
    return pin


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    monkeypatch.delenv(rp.ENV_URL, raising=False)


# -- the loopback file host ----------------------------------------------------


def test_file_host_serves_counts_and_refuses_unknown_names(tmp_path):
    (tmp_path / "on_disk.csv").write_bytes(b"a,b\n1,2\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "hidden.csv").write_bytes(b"x")
    with LoopbackFileHost({"in_memory.dat": b"1 2 3\n"}, directory=tmp_path) as server:
        assert requests.get(server.file_url("in_memory.dat")).content == b"1 2 3\n"
        assert requests.get(server.file_url("on_disk.csv")).content == b"a,b\n1,2\n"
        for name in ("missing.csv", "sub/hidden.csv", "../etc/passwd"):
            assert requests.get(f"{server.url}/{name}").status_code == 404, name
        assert requests.get(f"{server.root_url}/elsewhere/other.dat").status_code == 404
        assert server.counts["in_memory.dat"] == 1 and server.counts["on_disk.csv"] == 1
        server.set_file("in_memory.dat", b"changed")
        assert requests.get(server.file_url("in_memory.dat")).content == b"changed"


# -- downloads -------------------------------------------------------------------


def test_download_verifies_pinned_and_records_trusted_on_first_use(tmp_path, host, files):
    names = ["Baseline_test.csv", rp.LSBG_LIST]
    pinned = {"Baseline_test.csv": _sha(files["Baseline_test.csv"])}
    info = rp.download_data(tmp_path, host.url, pinned, files=names, log=lambda *a: None)
    assert info["Baseline_test.csv"]["verified"] == "pinned digest"
    assert info[rp.LSBG_LIST]["verified"] == "trusted on first use"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest[rp.LSBG_LIST]["sha256"] == _sha(files[rp.LSBG_LIST])
    assert (tmp_path / rp.LSBG_LIST).read_bytes() == files[rp.LSBG_LIST]
    again = rp.download_data(tmp_path, host.url, pinned, files=names, log=lambda *a: None)
    assert {v["action"] for v in again.values()} == {"reused"}
    assert host.total_requests == 2


def test_wrong_checksum_names_the_file_and_keeps_nothing(tmp_path, host):
    with pytest.raises(rp.ChecksumError, match="Baseline_test.csv") as err:
        rp.download_data(tmp_path, host.url, {"Baseline_test.csv": "0" * 64},
                         files=["Baseline_test.csv"], log=lambda *a: None)
    assert "0" * 64 in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_wrong_checksum_through_the_command_line(tmp_path, host, capsys):
    # The real pinned digests cannot match the synthetic files.
    work = tmp_path / "work"
    rc = main(["reproduce", "--workdir", str(work), "--data-url", host.url, "--quiet"])
    assert rc == 2
    message = capsys.readouterr().err
    assert "Baseline_training.csv" in message and "SHA-256" in message
    assert [p.name for p in (work / "downloads").iterdir()] == []


def test_trusted_on_first_use_file_changed_on_disk_is_an_error(tmp_path, host):
    rp.download_data(tmp_path, host.url, files=[rp.ARTIFACT_LIST], log=lambda *a: None)
    (tmp_path / rp.ARTIFACT_LIST).write_text("ra,dec\n1,2\n")
    with pytest.raises(rp.ChecksumError, match=rp.ARTIFACT_LIST):
        rp.download_data(tmp_path, host.url, files=[rp.ARTIFACT_LIST], log=lambda *a: None)


def test_damaged_pinned_file_is_downloaded_again(tmp_path, host, files):
    pinned = {"hsc_artifacts.csv": _sha(files["hsc_artifacts.csv"])}
    rp.download_data(tmp_path, host.url, pinned, files=["hsc_artifacts.csv"], log=lambda *a: None)
    (tmp_path / "hsc_artifacts.csv").write_text("damaged")
    info = rp.download_data(tmp_path, host.url, pinned, files=["hsc_artifacts.csv"],
                            log=lambda *a: None)
    assert info["hsc_artifacts.csv"]["action"] == "downloaded"
    assert (tmp_path / "hsc_artifacts.csv").read_bytes() == files["hsc_artifacts.csv"]


def test_data_url_comes_from_the_environment(tmp_path, host, files, monkeypatch):
    monkeypatch.setenv(rp.ENV_URL, host.url)
    rp.download_data(tmp_path, files=[rp.LSBG_LIST], log=lambda *a: None)
    assert host.counts[rp.LSBG_LIST] == 1


@pytest.mark.skipif(not (SHARED / "deepshadows").is_dir(), reason="../shared/data not present")
def test_public_files_match_the_pinned_digests(tmp_path):
    for folder, names in (("deepshadows", list(rp.SPLIT_FILES.values())),
                          ("hsc_greco2018", list(rp.HSC_FILES))):
        with LoopbackFileHost(directory=SHARED / folder) as server:
            info = rp.download_data(tmp_path, server.url, files=names, log=lambda *a: None)
        assert all(info[n]["verified"] == "pinned digest" for n in names)
    assert len(rp.read_split(tmp_path / "Baseline_test.csv")) == 5000
    assert rp.read_split(tmp_path / "Baseline_training.csv").colnames == ["index", "ra", "dec"]
    greco = load_greco2018(tmp_path)
    assert (np.sum(greco["label"] == 1), np.sum(greco["label"] == 0)) == (781, 641)


# -- labels -----------------------------------------------------------------------


def _table(rows, **extra):
    table = Table(rows=rows, names=("ra", "dec"))
    for name, values in extra.items():
        table[name] = values
    return table


def test_label_by_position_matches_each_list_and_drops_the_rest():
    lsbgs = _table([(10.0, -5.0), (20.0, -6.0)])
    artifacts = _table([(30.0, -7.0), (40.0, -8.0), (20.0, -6.0)])  # 20,-6 is in both
    offset = (0.5 * u.arcsec).to_value(u.deg)
    split = _table([(10.0 + offset, -5.0), (30.0, -7.0 - offset), (50.0, -9.0), (20.0, -6.0),
                    (40.0, -8.0)])
    with pytest.warns(AstropyUserWarning, match=r"dropped 1 of 5 rows .* neither .* and 1 .* both"):
        labelled = rp.label_by_position(split, lsbgs, artifacts)
    assert list(labelled["label"]) == [1, 0, 0]
    assert list(labelled["master_row"]) == [0, 0, 1]
    assert (labelled.meta["n_unmatched"], labelled.meta["n_ambiguous"]) == (1, 1)


def test_label_by_position_respects_the_tolerance():
    lsbgs, artifacts = _table([(10.0, -5.0)]), _table([(30.0, -7.0)])
    two_arcsec = (2 * u.arcsec).to_value(u.deg)
    split = _table([(10.0, -5.0 + two_arcsec), (30.0, -7.0)])
    with pytest.warns(AstropyUserWarning, match="dropped 1 of 2"):
        assert list(rp.label_by_position(split, lsbgs, artifacts)["label"]) == [0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide = rp.label_by_position(split, lsbgs, artifacts, tolerance=3 * u.arcsec)
    assert list(wide["label"]) == [1, 0]


def test_label_by_position_without_any_match_is_an_error():
    with pytest.raises(ValueError, match="Baseline_test.csv: none of its 1 rows"):
        rp.label_by_position(_table([(1.0, 1.0)]), _table([(10.0, -5.0)]),
                             _table([(30.0, -7.0)]), name="Baseline_test.csv")


def test_features_follow_the_matching_list():
    labelled = Table({"label": [1, 0, 1], "master_row": [1, 0, 0]})
    lsbg = (np.array([[10.0, 1.0], [11.0, 2.0]]), ["m_g", "ell"])
    artifact = (np.array([[20.0]]), ["m_g"])  # no ellipticity: only m_g is common
    rp.attach_features(labelled, lsbg, artifact)
    assert list(labelled["feat_m_g"]) == [11.0, 20.0, 10.0]
    assert "feat_ell" not in labelled.colnames and labelled.meta["features"] == ["m_g"]


def test_balanced_subset():
    labels = np.array([1, 0] * 10)
    rows = rp.balanced_subset(labels, 3, seed=4)
    assert len(rows) == 6 and labels[rows].sum() == 3 and np.all(np.diff(rows) > 0)
    other = rp.balanced_subset(labels, 7, seed=5, exclude=rows)
    assert not set(rows) & set(other)
    with pytest.raises(ValueError, match="HSC test set: 8 LSBG rows wanted but only 7"):
        rp.balanced_subset(labels, 8, exclude=rows, what="HSC test set")
    assert list(rp.balanced_subset(labels, None)) == list(range(20))


def test_bad_options_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="subset must be at least 5"):
        rp.run_reproduction(tmp_path, subset=2)
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        rp.run_reproduction(tmp_path, epochs=0)
    assert list(tmp_path.iterdir()) == []


# -- end to end ---------------------------------------------------------------------


def _reproduce(work, host, viewer, cache):
    return main(["reproduce", "--work-dir", str(work), "--subset", str(PER_CLASS),
                 "--epochs", "1", "--finetune-epochs", "1", "--seed", "0",
                 "--base-url", viewer.url, "--data-url", host.url, "--workers", "4",
                 "--cache", str(cache), "--bootstrap", "50", "--quiet"])


def _snapshot(work):
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}


def test_interrupted_run_resumes_at_the_failed_step(tmp_path, host, viewer, files, pinned_to,
                                                   capsys):
    pinned_to(files)
    work = tmp_path / "work"
    # The HSC layer is down: the run stops at the first HSC set, before any training.
    viewer.set_faults(lambda info: 404 if info.params.get("layer") == "hsc2" else None)
    with pytest.warns(AstropyUserWarning):
        assert _reproduce(work, host, viewer, tmp_path / "cache") == 2
    assert "hsc_finetune: cutouts were fetched for 0 of 10" in capsys.readouterr().err
    done = sorted(p.stem for p in (work / "steps").glob("*.json"))
    assert done == ["cutouts_des_test", "cutouts_des_train", "cutouts_des_validation", "label",
                    "select"]
    des_requests = viewer.counts["cutout.jpg"] - 2 * PER_CLASS
    assert des_requests == 3 * 2 * PER_CLASS

    viewer.reset_counts()
    assert _reproduce(work, host, viewer, tmp_path / "cache") == 2
    # Only the failed set was asked for again; nothing was downloaded again.
    assert viewer.counts["cutout.jpg"] == 2 * PER_CLASS
    assert host.total_requests == len(rp.DATA_FILES)
    assert not (work / "models").exists()


@pytest.mark.slow
def test_reproduce_end_to_end_then_resume(tmp_path, host, viewer, files, pinned_to, capsys):
    pinned_to(files)
    work = tmp_path / "work"
    with pytest.warns(AstropyUserWarning, match="Baseline_test.csv: dropped 1 of 11"):
        assert _reproduce(work, host, viewer, tmp_path / "cache") == 0
    out = capsys.readouterr().out
    assert "DES test: DeepShadows: accuracy" in out and "(paper 0.920)" in out

    # Every file downloaded once and verified; every object fetched once.
    assert dict(host.counts) == {name: 1 for name in rp.DATA_FILES}
    manifest = json.loads((work / "downloads" / "manifest.json").read_text())
    assert {n: m["sha256"] for n, m in manifest.items()} == {n: _sha(b) for n, b in files.items()}
    assert manifest[rp.LSBG_LIST]["verified"] == "trusted on first use"
    assert manifest["Baseline_test.csv"]["verified"] == "pinned digest"
    n_objects = 3 * 2 * PER_CLASS + 2 * 2 * PER_CLASS
    assert viewer.counts["cutout.jpg"] == n_objects

    # Labelled by position; the stray test row left out and reported.
    test_set = Table.read(work / "sets" / "des_test.ecsv")
    assert len(test_set) == 2 * PER_CLASS and (5.0 not in list(test_set["ra"]))
    assert all(truth_label(r, d, SKY_SEED) == lab
               for r, d, lab in zip(test_set["ra"], test_set["dec"], test_set["label"]))

    report = (work / "report.html").read_text()
    for key, paper in rp.PAPER_RESULTS.items():
        metrics = json.loads((work / "metrics" / f"{key}.json").read_text())
        assert metrics["n"] == 2 * PER_CLASS
        assert metrics["title"] in report
        assert f"{metrics['metrics']['accuracy']['value']:.3f}" in report
        assert f"paper {paper['accuracy']:.3f}" in report
    assert "1 of 11 rows match no master list" in report
    assert 'src="http' not in report and report.count('src="data:image/png;base64,') >= 9
    assert "catalogue: ell, m_g" in (work / "metrics" / "des_svm.json").read_text()

    # Resume: nothing downloaded, fetched, trained or rewritten.
    before = _snapshot(work)
    requests_before = (host.total_requests, viewer.total_requests)
    assert _reproduce(work, host, viewer, tmp_path / "cache") == 0
    assert (host.total_requests, viewer.total_requests) == requests_before
    assert _snapshot(work) == before
    outcome = rp.run_reproduction(work, epochs=1, finetune_epochs=1, subset=PER_CLASS,
                                  base_url=viewer.url, data_url=host.url,
                                  cache=tmp_path / "cache", quiet=True, n_boot=50)
    assert outcome["ran"] == [] and "train_des" in outcome["skipped"]

    # A changed setting reruns only what depends on it.
    outcome = rp.run_reproduction(work, epochs=1, finetune_epochs=1, subset=PER_CLASS,
                                  base_url=viewer.url, data_url=host.url,
                                  cache=tmp_path / "cache", quiet=True, n_boot=60)
    assert outcome["ran"] == ["metrics", "report"]
    assert (host.total_requests, viewer.total_requests) == requests_before
