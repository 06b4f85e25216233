"""Training on several archives in one run (issue #38): HAM10000 plus a slice of ISIC 2017's train images, each
split by its own groups, reported per source and pooled, judged on the archive's images it never saw."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import balanced_accuracy_score

from lesion_pl.config import load_config

from .conftest import FAST, ISIC2017_COLUMNS, invoke, isic2017_slice


def _config(path, archive, **extra) -> str:
    source = {"name": "isic2017", "root": str(archive), "format": "csv", "columns": {"image": "image", "label": "dx"},
              "where": {"split": "train"}, **extra}
    path.write_text(yaml.safe_dump({"data": {"sources": [source]}}))
    return str(path)


@pytest.fixture(scope="module")
def archive(isic2017_root, tmp_path_factory):
    # 20 a class: StratifiedGroupKFold splits each class into 20 folds
    return isic2017_slice(isic2017_root, tmp_path_factory.mktemp("isic") / "isic2017", per_class=20)


@pytest.fixture(scope="module")
def two_sources(small_ham, archive, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    run = folder / "two"
    config = _config(folder / "two.yaml", archive)
    r = invoke("fit", "--data-root", small_ham, "--out", run, "--config", config, "--max-epochs", 2, *FAST)
    assert r.exit_code == 0, r.output
    assert "isic2017: the source names no lesion or patient: the split is by image" in r.output
    r = invoke("test", "--run", run, "--quiet")
    assert r.exit_code == 0, r.output
    return run


def test_each_source_is_split_by_its_own_groups(two_sources, trained_run, small_ham, archive):
    splits = pd.read_csv(two_sources / "splits.csv")
    labels = pd.read_csv(archive / "labels.csv")
    ham = pd.read_csv(small_ham / "HAM10000_metadata.csv")
    own = small_ham.name
    assert splits["source"].value_counts().to_dict() == {own: len(ham), "isic2017": int((labels["split"] ==
                                                                                          "train").sum())}
    assert not splits["image_id"].isin(labels.loc[labels["split"] == "val", "image_id"]).any()  # val: held out
    # HAM10000's rows split exactly as in a run of HAM10000 alone; the archive's groups are its own, by image
    alone = pd.read_csv(trained_run / "splits.csv").set_index("image_id")["split"]
    mine = splits[splits["source"] == own].set_index("image_id")["split"]
    assert mine.sort_index().equals(alone.sort_index())
    isic = splits[splits["source"] == "isic2017"]
    assert (isic["group"] == "isic2017/" + isic["image_id"]).all()
    assert set(isic["split"]) == {"train", "val", "test"}
    summary = json.loads((two_sources / "summary.json").read_text())
    assert summary["sources"]["isic2017"]["images"] == len(isic) and summary["sources"][own]["images"] == len(ham)


def test_test_reports_each_source_and_the_confirmed_lesions(two_sources):
    m = json.loads((two_sources / "test" / "metrics.json").read_text())
    preds = pd.read_csv(two_sources / "test" / "predictions.csv")
    splits = pd.read_csv(two_sources / "splits.csv")
    tested = splits[splits["split"] == "test"]
    assert m["n_images"] == len(tested) == len(preds)
    assert {k: v["n_images"] for k, v in m["by_source"].items()} == tested["source"].value_counts().to_dict()
    for name, f in m["by_source"].items():
        rows = preds[preds["source"] == name]
        assert f["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(rows["dx"], rows["pred"]), abs=1e-9)
        lo, hi = f["ci95"]["balanced_accuracy"]
        assert lo <= hi
    # the confirmed lesions are HAM10000's: the archive records no dx_type
    assert m["histo_confirmed"]["images"] == int((preds["dx_type"] == "histo").sum()) > 0
    assert preds.loc[preds["source"] == "isic2017", "dx_type"].isna().all()
    cal = json.loads((two_sources / "calibration.json").read_text())
    assert set(cal["by_source"]) == set(m["by_source"])


def test_report_export_and_the_archives_unseen_images(two_sources, archive):
    r = invoke("report", "--run", two_sources, "--quiet")
    assert r.exit_code == 0, r.output
    page = (two_sources / "report" / "index.html").read_text()
    assert "<h3>By source</h3>" in page and "<th>isic2017</th>" in page
    r = invoke("export", "--run", two_sources, "--quiet")
    assert r.exit_code == 0 and "same top class on" in r.output, r.output
    # the archive's train images are the run's own: an evaluation takes its val images alone
    r = invoke("test", "--run", two_sources, "--data-root", archive, "--format", "csv", "--split", "all",
               "--set", ISIC2017_COLUMNS, "--quiet")
    assert r.exit_code == 2 and "train or val split" in r.output, r.output
    r = invoke("test", "--run", two_sources, "--data-root", archive, "--format", "csv", "--split", "all",
               "--set", ISIC2017_COLUMNS, "--set", "data.where={split: val}", "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads((two_sources / "evaluations" / "isic2017-csv" / "metrics.json").read_text())
    assert m["n_images"] == int((pd.read_csv(archive / "labels.csv")["split"] == "val").sum())


def test_a_bad_second_source_fails_before_anything_is_written(small_ham, archive, tmp_path):
    out = tmp_path / "run"
    config = _config(tmp_path / "bad.yaml", tmp_path / "nowhere")
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--config", config, "--max-epochs", 1, *FAST)
    assert r.exit_code == 2 and f"data.sources[0] (isic2017, {tmp_path / 'nowhere'}): data root" in r.output, r.output
    assert r.output.count("\n") == 1 and not out.exists()
    config = _config(tmp_path / "labels.yaml", archive, columns={"image": "image", "label": "diagnosis"})
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--config", config, "--max-epochs", 1, *FAST)
    assert r.exit_code == 2 and "data.sources[0] (isic2017" in r.output and "unknown label(s)" in r.output, r.output
    assert not out.exists()


def test_balanced_sources_weigh_alike(small_ham, archive, tmp_path):
    from lesion_pl.data.datamodule import LesionDataModule

    config = _config(tmp_path / "c.yaml", archive)
    cfg = load_config(config, [f"data.root={small_ham}", "data.image_size=32", "data.balance_sources=true"])
    dm = LesionDataModule(cfg.data, cfg.seed, progress=False).build()
    rows = dm.table.iloc[dm.indices("train")]
    weight = dm.row_weights()
    totals = pd.Series(weight).groupby(rows["source"].to_numpy()).sum()
    assert len(totals) == 2 and np.allclose(totals.to_numpy(), totals.iloc[0])
    assert weight.sum() == pytest.approx(len(rows))
    plain_cfg = load_config(config, [f"data.root={small_ham}", "data.image_size=32"])
    plain = LesionDataModule(plain_cfg.data, plain_cfg.seed, progress=False).build()
    assert (plain.row_weights() == 1).all()
