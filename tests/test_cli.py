"""The command line end to end on real images: fit, resume, test, data summary, and bad input."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from lesion_pl.classes import CLASSES
from lesion_pl.config import load_config

from .conftest import FAST, PROJECT, invoke, make_dataset, sample_meta


@pytest.fixture(scope="module")
def fitted(small_ham, tmp_path_factory):
    """A run of its own: these tests resume it."""
    out = tmp_path_factory.mktemp("runs") / "e2e"
    notes = logging.getLogger("pytorch_lightning.utilities.rank_zero")  # Lightning's notes to the user
    handler = logging.Handler()
    handler.emit = lambda record: FIT_NOTES.append(record.getMessage())
    notes.addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 2, *FAST)
        warnings.warn("probe: the recording still works after fit", stacklevel=1)
    notes.removeHandler(handler)
    assert r.exit_code == 0, r.output
    FIT_WARNINGS[:] = [str(w.message) for w in caught]
    return out


FIT_WARNINGS: list[str] = []
FIT_NOTES: list[str] = []


def test_fit_log_has_no_warnings_nobody_can_act_on(fitted):
    # each came once per epoch (or per run) in every fit's output until it was dealt with
    noise = ("called before the ``update`` method", "isinstance(treespec, LeafSpec)")
    assert any(w.startswith("probe") for w in FIT_WARNINGS), "the recording is broken"
    assert not [w for w in FIT_WARNINGS if any(n in w for n in noise)]


def test_fit_notes_the_hardware_once_and_no_noise(fitted):
    """fit checks its trainer settings before writing the run folder: that trainer says nothing; and
    Lightning's notes that tell a user nothing are dropped."""
    assert sum(n.startswith("GPU available") for n in FIT_NOTES) == 1, FIT_NOTES
    noise = ("Tip", "100% of the batches", "to estimate number of stepping batches")
    assert not [n for n in FIT_NOTES if any(x in n for x in noise)]


def test_fit_writes_a_complete_run_folder(fitted, small_ham):
    cfg = load_config(fitted / "config.yaml")
    assert cfg.data.image_size == 48 and cfg.data.root == str(small_ham)
    splits = pd.read_csv(fitted / "splits.csv")
    meta = pd.read_csv(small_ham / "HAM10000_metadata.csv")
    assert sorted(splits["image_id"]) == sorted(meta["image_id"])
    assert (splits.groupby("group")["split"].nunique() == 1).all()
    summary = json.loads((fitted / "summary.json").read_text())
    assert summary["epochs"] == 2 and 0 <= summary["best_val_balanced_accuracy"] <= 1
    log = pd.read_csv(fitted / "logs" / "metrics.csv")
    assert {"train/loss_epoch", "val/balanced_accuracy", "val/auroc_malignant", "val/recall_mel",
            "lr-AdamW/pg1"} <= set(log.columns)
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(fitted / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert "normalize.mean" in ckpt["state_dict"]


def test_fit_records_the_size_auto_chose(small_ham, tmp_path, monkeypatch):
    # a run folder is read on other machines (test, export): it must name the size, not "auto"
    from lesion_pl import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)  # fp32 here: auto means 64 px
    out = tmp_path / "auto"
    loud = [a for a in FAST if a != "--quiet"]
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, *loud,
               "--set", "data.image_size=auto", "--set", "trainer.limit_train_batches=1")
    assert r.exit_code == 0, r.output
    assert "at 64 px in 32-true (data.image_size and trainer.precision: auto" in r.output
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["image_size"] == 64
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["image_size"], summary["precision"]) == (64, "32-true")
    r = invoke("export", "--run", out)
    assert r.exit_code == 0, r.output
    import onnx

    shape = onnx.load(out / "export" / "model.onnx").graph.input[0].type.tensor_type.shape
    assert [d.dim_value for d in shape.dim][1:] == [64, 64, 3]


def test_test_writes_metrics_predictions_and_plots(fitted):
    r = invoke("test", "--run", fitted, "--quiet")
    assert r.exit_code == 0, r.output
    assert "balanced_accuracy" in r.output and "auroc_malignant" in r.output
    m = json.loads((fitted / "test" / "metrics.json").read_text())
    for key in ("n_images", "accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
                "auroc_macro", "auroc_malignant"):
        assert key in m
    for key in ("balanced_accuracy", "auroc_macro", "auroc_malignant"):
        lo, hi = m["ci95"][key]
        assert 0 <= lo <= hi <= 1 and f"95% CI {lo:.3f}-{hi:.3f}" in r.output
    assert set(m["per_class"]) == set(CLASSES)
    assert set(m["per_class"]["mel"]) == {"precision", "recall", "f1", "auroc", "support"}
    splits = pd.read_csv(fitted / "splits.csv")
    n_test = int((splits["split"] == "test").sum())
    assert m["n_images"] == n_test == sum(v["support"] for v in m["per_class"].values())
    preds = pd.read_csv(fitted / "test" / "predictions.csv")
    assert len(preds) == n_test
    probs = preds[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    for png in ("confusion_matrix.png", "roc.png"):
        with Image.open(fitted / "test" / png) as im:
            assert im.size[0] > 500 and im.size[1] > 300


def test_resume_continues_from_last(fitted):
    r = invoke("fit", "--out", fitted, "--resume", "--max-epochs", 3, "--quiet")
    assert r.exit_code == 0, r.output
    assert json.loads((fitted / "summary.json").read_text())["epochs"] == 3
    log = pd.read_csv(fitted / "logs" / "metrics.csv")
    assert sorted(log["epoch"].dropna().unique()) == [0, 1, 2]  # history before the resume is kept
    r = invoke("fit", "--out", fitted, "--max-epochs", 3, *FAST)
    assert r.exit_code == 2 and "already holds checkpoints" in r.output


def test_resume_continues_from_the_last_epoch_not_the_best(small_ham, tmp_path):
    """A learning rate too small to change anything: validation never improves on epoch 0, so the best checkpoint
    stays epoch 0's while last.ckpt must follow every epoch (Lightning 2.6's save_last followed the best alone)."""
    from lesion_pl.run import RunDir
    from lesion_pl.safe_load import torch_load

    out = tmp_path / "flat"
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 3, *FAST, "--set", "optim.lr=1e-12")
    assert r.exit_code == 0, r.output
    run = RunDir(out)
    last, best = torch_load(run.last, "checkpoint"), torch_load(run.best, "checkpoint")
    assert (best["epoch"], last["epoch"], last["global_step"]) == (0, 2, 9)
    kept = [v for k, v in last["callbacks"].items() if "val/balanced_accuracy" in k and "ModelCheckpoint" in k]
    assert len(kept) == 1 and kept[0]["best_model_path"].endswith("best.ckpt")  # the best's state, for the resume
    summary = json.loads((out / "summary.json").read_text())
    first = pd.read_csv(out / "logs" / "metrics.csv").dropna(subset=["val/balanced_accuracy"]).iloc[0]
    assert summary["best_epoch"] == 0
    assert summary["best_val_balanced_accuracy"] == pytest.approx(first["val/balanced_accuracy"])
    r = invoke("fit", "--out", out, "--resume", "--max-epochs", 4, "--quiet")
    assert r.exit_code == 0, r.output
    log = pd.read_csv(out / "logs" / "metrics.csv")
    assert log.dropna(subset=["val/balanced_accuracy"])["epoch"].tolist() == [0, 1, 2, 3]  # epoch 3 alone trained
    assert torch_load(run.last, "checkpoint")["global_step"] == 12


def test_data_summary(small_ham):
    """Every count of the table against the metadata file and the split it reports (the one fit would write)."""
    import pandas as pd

    r = invoke("data", "summary", "--data-root", small_ham)
    assert r.exit_code == 0, r.output
    meta = pd.read_csv(small_ham / "HAM10000_metadata.csv")
    assert f"{small_ham}: {len(meta)} images, {meta['lesion_id'].nunique()} lesions, split seed 42" in r.output
    rows = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in r.output.splitlines()[2:-1]}
    from lesion_pl.config import load_config  # the split itself, as fit makes it, to count per split
    from lesion_pl.data.sources import read_source
    from lesion_pl.data.splits import make_splits

    cfg = load_config(None, [f"data.root={small_ham}"])
    table = read_source("ham10000", small_ham, cfg.data)
    split = make_splits(table, cfg.data.splits, 42)
    for dx, counts in meta["dx"].value_counts().items():
        per = [int(((table["dx"] == dx) & (split == s)).sum()) for s in ("train", "val", "test")]
        assert rows[dx] == [*per, counts], dx
    assert rows["images"] == [int((split == s).sum()) for s in ("train", "val", "test")] + [len(meta)]
    assert rows["lesions"] == [table["group"][split == s].nunique() for s in ("train", "val", "test")] + [
        meta["lesion_id"].nunique()]
    assert r.output.rstrip().endswith("no lesion is in two splits")


def fails_cleanly(args, out, message):
    """Exit code 2, one line naming the problem, no traceback, nothing written to the run folder."""
    proc = subprocess.run([sys.executable, str(PROJECT / "cli.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=PROJECT)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert not out.exists()


def test_missing_data_root(tmp_path):
    fails_cleanly(["fit", "--data-root", tmp_path / "nope", "--out", tmp_path / "run"], tmp_path / "run",
                   "does not exist")


def test_bad_datasets_fail_before_anything_is_written(ham_root, ham_meta, tmp_path):
    meta = sample_meta(ham_meta, 30)
    no_col = make_dataset(ham_root, meta.drop(columns="lesion_id"), tmp_path / "no_col")
    r = invoke("fit", "--data-root", no_col, "--out", tmp_path / "r1", *FAST)
    assert r.exit_code == 2 and "missing column(s) lesion_id" in r.output and not (tmp_path / "r1").exists()

    corrupt = make_dataset(ham_root, meta, tmp_path / "corrupt")
    victim = corrupt / "images" / f"{meta['image_id'][0]}.jpg"
    victim.write_bytes(b"not a jpeg at all")
    r = invoke("fit", "--data-root", corrupt, "--out", tmp_path / "r2", *FAST)
    assert r.exit_code == 2 and victim.name in r.output and not (tmp_path / "r2").exists()

    ok = make_dataset(ham_root, meta, tmp_path / "ok")
    r = invoke("fit", "--data-root", ok, "--out", tmp_path / "r3", "--set",
               "data.splits={train: 0.85, val: 0.15, test: 0.0}", *FAST)
    assert r.exit_code == 2 and "the test split is empty" in r.output and not (tmp_path / "r3").exists()


def test_test_without_a_run(tmp_path):
    r = invoke("test", "--run", tmp_path / "nothing")
    assert r.exit_code == 2 and "fit --out" in r.output


def test_fit_prints_a_line_per_epoch_where_output_is_not_a_terminal(small_ham, tmp_path):
    """Lightning's bar draws nothing in a file or a CI log: fit prints each epoch's figures instead, the ones
    metrics.csv holds for that epoch."""
    import re

    out = tmp_path / "run"
    fast = [a for a in FAST if a != "--quiet"]
    proc = subprocess.run([sys.executable, str(PROJECT / "cli.py"), "fit", "--data-root", str(small_ham), "--out",
                           str(out), "--max-epochs", "3", *fast], capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"], proc.stdout
    log = pd.read_csv(out / "logs" / "metrics.csv")
    val = log[log["val/balanced_accuracy"].notna()].set_index("epoch")
    best = None
    for epoch, line in enumerate(lines):
        fields = dict(re.findall(r"(val balanced accuracy|malignant AUROC|train loss) ([\d.]+)", line))
        want = val.loc[epoch, "val/balanced_accuracy"]
        assert float(fields["val balanced accuracy"]) == pytest.approx(want, abs=1e-4)
        assert float(fields["malignant AUROC"]) == pytest.approx(val.loc[epoch, "val/auroc_malignant"], abs=1e-4)
        best = max(best or 0, val.loc[epoch, "val/balanced_accuracy"])
        assert f"best {best:.4f}" in line and re.search(r"\d+ s/epoch", line) and "min left" in line
    assert "epoch 3/3" in lines[-1] and "at most 0 min left" in lines[-1]
