"""Ensembles (trainer.members > 1): training the members, resuming, and every later command
(calibrate, test, export with ONNX parity, predict, explain, report) on the members together."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from lesion_pl.checkpoint import load_run_model
from lesion_pl.classes import CLASSES
from lesion_pl.config import load_config
from lesion_pl.ensemble import Ensemble
from lesion_pl.evaluate.gradcam import gradcam
from lesion_pl.export.runtime import LesionOnnxClassifier
from lesion_pl.module import LesionClassifier
from lesion_pl.run import RunDir
from lesion_pl.training import _member_config

from .conftest import FAST, invoke


@pytest.fixture(scope="module")
def ensemble_run(small_ham, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ens"
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, "--set", "trainer.members=2", *FAST)
    assert r.exit_code == 0, r.output
    assert "member 0 (seed 42)" in r.output and "member 1 (seed 43)" in r.output
    return out


def _tiny(seed: int) -> LesionClassifier:
    torch.manual_seed(seed)
    cfg = load_config(None, ["model.widths=[8,16,32,64]"])
    return LesionClassifier(cfg, [0.5] * 3, [0.2] * 3).eval()


def test_ensemble_is_the_mean_of_the_members_log_probabilities():
    members = [_tiny(0), _tiny(1)]
    x = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        expected = (members[0](x).log_softmax(1) + members[1](x).log_softmax(1)) / 2
        got = Ensemble(members).eval()(x)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(members[0](x), members[1](x))  # the two really differ


def test_gradcam_of_an_ensemble_averages_its_members_maps():
    members = [_tiny(0), _tiny(1)]
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    target = torch.tensor([1, 4])
    maps = [gradcam(m, x, target)[0] for m in members]
    cams, logits = gradcam(Ensemble(members), x, target)
    mean = (maps[0] + maps[1]) / 2
    torch.testing.assert_close(cams, mean / mean.flatten(1).max(1).values[:, None, None])
    assert logits.shape == (2, 7)


def test_members_share_the_time_budget():
    cfg = load_config(None, ["trainer.members=3", "seed=7"])
    first = _member_config(cfg, 0, 600.0, 3)
    assert first.seed == 7 and first.trainer.members == 1 and first.trainer.max_time == 200
    assert _member_config(cfg, 1, 600.0 - 150.0, 2).trainer.max_time == 225  # the first used less
    assert _member_config(cfg, 2, None, 1).trainer.max_time is None
    assert cfg.trainer.members == 3  # the run's own config is left as it was


def test_fit_trains_each_member_as_a_run_of_its_own(ensemble_run):
    run = RunDir(ensemble_run)
    assert [m.path.name for m in run.members] == ["0", "1"]
    assert not run.checkpoints.exists()
    splits = run.splits.read_text()
    for i, m in enumerate(run.members):
        cfg = load_config(m.config)
        assert cfg.seed == 42 + i and cfg.trainer.members == 1
        assert m.splits.read_text() == splits and m.best.exists()
        assert pd.read_csv(m.path / "logs" / "metrics.csv")["val/balanced_accuracy"].notna().any()
    a, b = (torch.load(m.best, weights_only=True)["state_dict"] for m in run.members)
    first = next(k for k in a if k.startswith("net.") and k.endswith("weight"))
    assert not torch.equal(a[first], b[first])  # other seeds, other weights
    summary = json.loads(run.summary.read_text())
    assert [m["seed"] for m in summary["members"]] == [42, 43]
    assert summary["epochs"] == 2 and summary["fit_seconds"] == pytest.approx(
        sum(m["fit_seconds"] for m in summary["members"]), abs=0.2)
    cal = json.loads((ensemble_run / "calibration.json").read_text())
    assert summary["best_val_balanced_accuracy"] == pytest.approx(cal["val_balanced_accuracy"])
    assert isinstance(load_run_model(run), Ensemble)


def test_test_scores_the_ensemble(ensemble_run):
    r = invoke("test", "--run", ensemble_run, "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads((ensemble_run / "test" / "metrics.json").read_text())
    assert m["members"] == [str(ensemble_run / "members" / i / "checkpoints" / "best.ckpt") for i in "01"]
    # computed here from the two members' checkpoints: each view's mean of the members' log-probabilities,
    # calibrated (softmax of it / T + class bias), the views averaged, then fused with the metadata
    from lesion_pl import clinical
    from lesion_pl.checkpoint import load_classifier

    run = RunDir(ensemble_run)
    cal = json.loads((ensemble_run / "calibration.json").read_text())
    dm = run.datamodule(run.load_config(), progress=False)
    test = dm.dataset("test")
    images = torch.stack([test[i][0] for i in range(len(test))])
    views = [torch.rot90(images, k, (2, 3)) for k in range(4)]
    views += [torch.flip(v, (3,)) for v in views]
    members = [load_classifier(p).eval() for p in run.best_checkpoints]
    with torch.no_grad():
        mean_log = torch.stack([torch.stack([mm(v).double().log_softmax(1) for mm in members]).mean(0)
                                for v in views])  # [views, N, C]
    z = mean_log / cal["temperature"] + torch.tensor(cal["class_bias"], dtype=torch.float64)
    image_probs = z.softmax(-1).mean(0).numpy()
    rows = dm.table.iloc[test.indices]
    expected = clinical.fuse(image_probs, clinical.log_ratio(rows, cal["clinical"]), cal["clinical"]["weight"])
    both = pd.read_csv(ensemble_run / "test" / "predictions.csv")
    cols = [f"p_{c}" for c in CLASSES]
    assert list(both["image_id"]) == list(rows["image_id"])
    assert np.abs(both[cols].to_numpy() - expected).max() < 2e-5  # the CSV keeps 6 decimals
    # a member is a run folder of its own: tested alone it gives other probabilities
    r = invoke("test", "--run", ensemble_run / "members" / "1", "--quiet")
    assert r.exit_code == 0, r.output
    one = pd.read_csv(ensemble_run / "members" / "1" / "test" / "predictions.csv")
    assert np.abs(both[cols].to_numpy() - one[cols].to_numpy()).max() > 1e-3


def test_export_puts_the_whole_ensemble_in_one_onnx_graph(ensemble_run, small_ham):
    if not (ensemble_run / "test" / "predictions.csv").exists():
        assert invoke("test", "--run", ensemble_run, "--quiet").exit_code == 0
    r = invoke("export", "--run", ensemble_run, "--quiet")
    assert r.exit_code == 0, r.output
    path = ensemble_run / "export" / "model.onnx"
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["lesion_pl.members"] == "2"
    preds = pd.read_csv(ensemble_run / "test" / "predictions.csv")
    files = [next(small_ham.rglob(f"{i}.jpg")) for i in preds["image_id"]]
    result = LesionOnnxClassifier(path).predict(files, batch_size=16)
    # the image alone through ONNX equals the calibrated ensemble's image-only probabilities in torch
    run = RunDir(ensemble_run)
    cal = json.loads((ensemble_run / "calibration.json").read_text())
    from lesion_pl.evaluate.inference import predict_logits
    from lesion_pl.scoring import ScoringPolicy
    dm = run.datamodule(run.load_config(), progress=False)
    policy = ScoringPolicy.from_calibration(cal)
    torch_probs = policy(predict_logits(load_run_model(run), dm.dataset("test"), tta=policy.tta,
                                        progress=False)).probabilities
    assert np.abs(result.probabilities - torch_probs).max() <= 1e-4


def test_explain_and_report_on_an_ensemble(ensemble_run, small_ham, tmp_path):
    if not (ensemble_run / "test" / "predictions.csv").exists():
        assert invoke("test", "--run", ensemble_run, "--quiet").exit_code == 0
    images = sorted(small_ham.glob("images/*.jpg"))[:1]
    r = invoke("explain", *images, "--run", ensemble_run, "--out", tmp_path / "ex")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ex" / f"{images[0].stem}_gradcam.png").stat().st_size > 10_000
    r = invoke("report", "--run", ensemble_run, "--quiet")
    assert r.exit_code == 0, r.output
    page = (ensemble_run / "report" / "index.html").read_text()
    assert "an ensemble of 2" in page and "member 0" in page and "member 1" in page


def test_resume_trains_only_the_missing_members(ensemble_run, tmp_path):
    copy = tmp_path / "ens"
    shutil.copytree(ensemble_run, copy, ignore=shutil.ignore_patterns("test", "report", "export", "calibration.json"))
    shutil.rmtree(copy / "members" / "1")  # as if fit stopped after the first member
    r = invoke("test", "--run", copy, "--quiet")
    assert r.exit_code == 2 and "ensemble of 2 members but holds 1" in r.output and "--resume" in r.output
    before = (copy / "members" / "0" / "checkpoints" / "best.ckpt").read_bytes()
    r = invoke("fit", "--out", copy, "--resume", "--quiet")
    assert r.exit_code == 0, r.output
    assert (copy / "members" / "0" / "checkpoints" / "best.ckpt").read_bytes() == before
    assert (copy / "members" / "1" / "checkpoints" / "best.ckpt").exists()
    assert (copy / "calibration.json").exists()
    r = invoke("fit", "--out", copy, "--quiet")
    assert r.exit_code == 2 and "already holds checkpoints" in r.output


def test_an_ensemble_is_not_trained_across_devices(small_ham, tmp_path):
    r = invoke("fit", "--data-root", small_ham, "--out", tmp_path / "x", "--set", "trainer.members=2",
               "--devices", "2", *FAST)
    assert r.exit_code == 2 and "one after another" in r.output
    assert not (tmp_path / "x").exists()
    r = invoke("fit", "--data-root", small_ham, "--out", tmp_path / "y", "--set", "trainer.members=0", *FAST)
    assert r.exit_code == 2 and "trainer.members must be a whole number >= 1, got 0" in r.output
