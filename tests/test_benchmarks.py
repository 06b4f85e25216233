"""The benchmark scripts whose figures the README cites still run: small settings, real images."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lesion_pl.config import load_config

from .conftest import PROJECT, invoke


def run_script(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_inference_benchmark_times_three_engines_and_profiles_onnxruntime(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("export", "report"))
    r = invoke("export", "--run", run, "--int8", "--quiet")
    assert r.exit_code == 0, r.output
    lines = run_script("benchmarks/inference.py", "--run", run, "--images", 32, "--latency-images", 4,
                       "--profile").stdout.strip().splitlines()
    rows = json.loads(lines[-1])
    assert set(rows) == {"pytorch eager", "onnxruntime fp32", "onnxruntime int8"}
    assert all(r["images_per_s_b32"] > 0 and r["p95_ms"] >= r["p50_ms"] > 0 for r in rows.values())
    # the same graph in PyTorch and in onnxruntime fp32 names the same classes
    assert rows["onnxruntime fp32"]["balanced_accuracy"] == pytest.approx(rows["pytorch eager"]["balanced_accuracy"])
    profile = {line.split(",")[0]: line for line in lines if "time per operator" in line}
    assert "Conv " in profile["onnxruntime fp32"] and "QLinearConv " in profile["onnxruntime int8"]


def test_referral_benchmark_reproduces_the_runs_own_thresholds(trained_run):
    out = run_script("benchmarks/referral.py", "--run", trained_run, "--splits", 3, "--boot", 50).stdout
    rows = {(p[1], p[2]): p for p in (line.split() for line in out.splitlines())
            if len(p) > 2 and p[0] == trained_run.name and p[1] in ("malignant", "melanoma")}
    assert set(rows) == {(s, r) for s in ("malignant", "melanoma") for r in ("point", "0.90", "0.95", "0.99")}
    cal = json.loads((trained_run / "calibration.json").read_text())
    default = f"{cal['operating_points']['malignant']['confidence']:.2f}"  # the run was calibrated at the default
    assert default == f"{load_config().calibration.referral_confidence:.2f}"
    for name in ("malignant", "melanoma"):
        assert float(rows[name, default][3]) == pytest.approx(cal["operating_points"][name]["threshold"], abs=1e-4)
        thresholds = [float(rows[name, r][3]) for r in ("point", "0.90", "0.95", "0.99")]
        assert thresholds == sorted(thresholds, reverse=True)  # more confidence, lower threshold
    assert "val ECE" in out and "test ECE" in out
    # the floor line recomputes the reported test ECE and its floor from predictions.csv: they match test's own
    tested = next(line for line in out.splitlines() if line.startswith(trained_run.name) and "floor" in line).split()
    m = json.loads((trained_run / "test" / "metrics.json").read_text())["calibration"]
    assert float(tested[3]) == pytest.approx(m["ece_15_after"], abs=1e-4)
    assert float(tested[5]) == pytest.approx(m["ece_15_floor"], abs=1e-4)
    # the default rule's test sensitivity and specificity, recomputed from test's predictions.csv with scikit-learn
    import pandas as pd
    from sklearn.metrics import recall_score

    preds = pd.read_csv(trained_run / "test" / "predictions.csv")
    row = rows["malignant", default]
    flagged = preds["malignant_prob"] >= float(row[3])
    malignant = preds["dx"].isin(["mel", "bcc", "akiec"])
    assert float(row[5]) == pytest.approx(recall_score(malignant, flagged), abs=5e-4)
    assert float(row[8]) == pytest.approx(recall_score(~malignant, ~flagged), abs=5e-4)


def test_shift_benchmark_agrees_with_test_unshifted_and_feeds_the_report(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("export", "report"))
    assert invoke("export", "--run", run, "--quiet").exit_code == 0
    assert invoke("test", "--run", run, "--quiet").exit_code == 0  # as calibrated now (8 views, metadata fused)
    out = run_script("benchmarks/shift.py", "--run", run, "--shift", "jpeg_30", "--shift", "vignette_0.85",
                     "--boot", 50).stdout
    assert "jpeg_30" in out and "vignette_0.85" in out and "squash_1.0" not in out
    shift = json.loads((run / "shift.json").read_text())
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    # the exported model, unshifted, scores the test split as `test` does
    assert shift["images"] == metrics["n_images"] and shift["tta"] is True
    assert shift["none"]["auroc_malignant"] == pytest.approx(metrics["auroc_malignant"], abs=1e-3)
    assert shift["none"]["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"], abs=1e-6)
    assert shift["none"]["referral_sensitivity"] == pytest.approx(
        metrics["operating_points"]["malignant"]["sensitivity"], abs=1e-9)
    # JPEG at quality 30, done here with Pillow and scored through the runtime: the AUROCs equal the script's
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from lesion_pl.export.runtime import LesionOnnxClassifier

    from .conftest import clinical_metadata

    preds = pd.read_csv(run / "test" / "predictions.csv")
    root = Path(metrics["data_root"])
    shifted = []
    for image_id in preds["image_id"]:
        buf = io.BytesIO()
        Image.open(next(root.rglob(f"{image_id}.jpg"))).convert("RGB").save(buf, format="JPEG", quality=30)
        shifted.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    clf = LesionOnnxClassifier(run / "export" / "model.onnx")
    got = clf.predict(shifted, metadata=clinical_metadata(root, preds["image_id"]))
    malignant = preds["dx"].isin(["mel", "bcc", "akiec"])
    assert shift["shifts"]["jpeg_30"]["auroc_malignant"] == pytest.approx(roc_auc_score(malignant, got.malignancy),
                                                                          abs=1e-6)
    assert shift["shifts"]["jpeg_30"]["auroc_melanoma"] == pytest.approx(
        roc_auc_score(preds["dx"] == "mel", got.probabilities[:, list(clf.classes).index("mel")]), abs=1e-6)
    assert invoke("report", "--run", run, "--quiet").exit_code == 0
    page = (run / "report" / "index.html").read_text()
    assert "Under acquisition shift" in page and "JPEG re-encoded at quality 30" in page
    run_script("benchmarks/shift.py", "--run", run, "--shift", "zoom_1.3", "--boot", 50)  # added to the two
    assert list(json.loads((run / "shift.json").read_text())["shifts"]) == ["jpeg_30", "vignette_0.85", "zoom_1.3"]
    run_script("benchmarks/shift.py", "--run", run, "--split", "val", "--shift", "zoom_1.3", "--limit", 20,
               "--boot", 20)
    val = json.loads((run / "shift_val.json").read_text())
    assert val["split"] == "val" and val["images"] == 20 and list(val["shifts"]) == ["zoom_1.3"]


def test_gpu_speed_script_runs_as_a_cpu_smoke_run(small_ham):
    """The script a GPU session runs first: it must not fail on its first line there."""
    out = run_script("benchmarks/gpu_speed.py", "--model", "lesion_cnn", "--size", 32, "--batch", 8, "--steps", 2,
                     "--warmup", 1, "--set", f"data.root={small_ham}").stdout
    import re

    line = next(x for x in out.splitlines() if x.startswith("lesion_cnn   32 px, batch 8"))
    assert float(re.search(r":\s+([\d.]+) images/s", line).group(1)) > 0


def _scored_run(folder, drops: dict, bal_acc: float, auroc: float):
    """A run folder with only what shift_rule.py reads: shift_val.json's drops and calibration.json's figures."""
    folder.mkdir()
    shifts = {name: {"drop": {"auroc_malignant": a, "referral_sensitivity": s}} for name, (a, s) in drops.items()}
    (folder / "shift_val.json").write_text(json.dumps({"shifts": shifts}))
    figures = {"val_balanced_accuracy": bal_acc, "val_auroc_malignant": auroc}
    (folder / "calibration.json").write_text(json.dumps(figures))
    return folder


def test_shift_rule_counts_held_shifts_and_applies_all_three_tests(tmp_path):
    """A shift fails on either bar (AUROC down > 0.02, sensitivity down > 0.05); the candidate is adopted only
    where it holds more, drops less at worst, and keeps its unshifted validation figures."""
    default = _scored_run(tmp_path / "d", {"cast": (-0.05, -0.2), "jpeg": (-0.01, -0.06), "zoom": (0.01, 0.0)},
                          0.71, 0.915)
    better = _scored_run(tmp_path / "c", {"cast": (-0.019, -0.049), "jpeg": (-0.01, -0.01), "zoom": (0.0, 0.0)},
                         0.70, 0.911)
    weaker = _scored_run(tmp_path / "w", {"cast": (-0.0, 0.0), "jpeg": (0.0, 0.0), "zoom": (0.0, 0.0)},
                         0.65, 0.89)
    out = run_script("benchmarks/shift_rule.py", "--default", default, "--candidate", better).stdout
    assert "d                held 1/3  worst AUROC drop 0.050" in out and "fails: cast (AUROC -0.050" in out
    assert "c                held 3/3  worst AUROC drop 0.019" in out
    assert out.rstrip().endswith("candidate becomes the default: yes")
    out = run_script("benchmarks/shift_rule.py", "--default", default, "--candidate", weaker).stdout
    assert "(a) more held: True  (b) smaller worst drop: True  (c) unshifted within 0.01 / 0.005: False" in out
    assert out.rstrip().endswith("candidate becomes the default: no")


@pytest.fixture(scope="module")
def shortcut_scored(trained_run, isic2017_root, tmp_path_factory):
    """A copy of the trained run that shortcut.py has scored on 30 ISIC 2017 images: (run, its output)."""
    from .conftest import isic2017_slice

    tmp = tmp_path_factory.mktemp("shortcut")
    archive = isic2017_slice(isic2017_root, tmp / "isic2017", per_class=5)
    run = tmp / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("report", "export", "evaluations"))
    return run, run_script("benchmarks/shortcut.py", "--run", run, "--isic2017", archive).stdout


def test_shortcut_benchmark_scores_what_is_missing_and_prints_the_runs_own_figures(shortcut_scored, small_ham):
    """shortcut.py runs `test` on the second archive as the evaluation `isic2017` and prints the figures of the
    run's files: validation's melanoma AUROC against confirmed nevi recomputed here with scikit-learn."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from lesion_pl.terminal import metric_text

    run, out = shortcut_scored
    e = json.loads((run / "evaluations" / "isic2017" / "metrics.json").read_text())
    assert e["n_images"] == 30 and e["rows_kept"] is None  # train and val: the run never saw the archive
    assert f"ISIC 2017 (30 images, train and val): melanoma AUROC {e['auroc_melanoma']:.4f}" in out
    val = pd.read_csv(run / "val_predictions.csv")
    meta = pd.read_csv(small_ham / "HAM10000_metadata.csv").set_index("image_id")
    histo = meta.loc[val["image_id"], "dx_type"].to_numpy() == "histo"
    line = out.split("\n  val ")[1].split("\n")[0]
    mal = val["dx"].isin(["mel", "bcc", "akiec"])
    assert f"confirmed: malignant AUROC {roc_auc_score(mal[histo], val['malignant_prob'][histo]):.4f}" in line
    vs = histo & val["dx"].isin(["mel", "nv"]).to_numpy()
    mel_nv = roc_auc_score(val["dx"][vs] == "mel", val["p_mel"][vs]) if val["dx"][vs].nunique() == 2 else None
    assert f"melanoma vs nevi {metric_text(mel_nv, '.4f')}" in line  # n/a where the tiny val split lacks a side
    h = json.loads((run / "test" / "metrics.json").read_text())["histo_confirmed"]
    assert f"test, confirmed ({h['images']} images, {h['benign_images']} benign)" in out


def test_shortcut_validation_of_a_run_of_several_sources_is_on_its_own_source(shortcut_scored, tmp_path):
    """The rule's validation balanced accuracy, for a run that also trained on another archive, is that of the run's
    own source's rows (the folder name of its data root), recomputed here with scikit-learn."""
    from sklearn.metrics import balanced_accuracy_score

    from lesion_pl.config import resolve_data_root
    from lesion_pl.run import RunDir

    sys.path.insert(0, str(PROJECT / "benchmarks"))
    from shortcut import validation

    run = tmp_path / "run"
    shutil.copytree(shortcut_scored[0], run)
    own = Path(resolve_data_root(RunDir(run).load_config().data)).name
    val = pd.read_csv(run / "val_predictions.csv")
    other = val.index % 3 == 0  # a third of the rows from another archive, each named wrong there
    val["source"] = [("isic2017" if o else own) for o in other]
    val.loc[other, "pred"] = val.loc[other, "dx"].map({"nv": "mel"}).fillna("nv")
    val.to_csv(run / "val_predictions.csv", index=False)
    expected = balanced_accuracy_score(val["dx"][~other], val["pred"][~other])
    assert validation(run)["balanced_accuracy"] == pytest.approx(expected)
    assert expected != pytest.approx(balanced_accuracy_score(val["dx"], val["pred"]))  # the other rows would move it


MIX_FILES = ["val_predictions.csv", "test/predictions.csv", "evaluations/isic2017/predictions.csv"]
CODES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.fixture
def two_models(shortcut_scored, tmp_path):
    """The scored run `a`, and `b`: another model's probabilities (a's, each row's classes rolled by one)."""
    import numpy as np

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(shortcut_scored[0], a)
    shutil.copytree(a, b)
    for name in MIX_FILES:
        f = pd.read_csv(b / name, dtype={"image_id": str})
        f[[f"p_{c}" for c in CODES]] = np.roll(f[[f"p_{c}" for c in CODES]].to_numpy(), 1, axis=1)
        f["malignant_prob"] = f[["p_akiec", "p_bcc", "p_mel"]].sum(axis=1)
        f.to_csv(b / name, index=False)
    return a, b


def test_mix_prints_each_runs_figures_and_their_mean(two_models):
    """mix.py on a run and a second one whose probabilities differ: the mean's ISIC 2017 melanoma AUROC and the
    validation balanced accuracy of its most probable class, recomputed here with scikit-learn, as is a run's own."""
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    a, b = two_models
    files, codes = MIX_FILES, CODES
    out = run_script("benchmarks/mix.py", a, b).stdout
    pa, pb = (pd.read_csv(r / files[2], dtype={"image_id": str}) for r in (a, b))
    mel = roc_auc_score(pa["dx"] == "mel", (pa["p_mel"] + pb["p_mel"]) / 2)
    va, vb = (pd.read_csv(r / files[0]) for r in (a, b))
    mean = (va[[f"p_{c}" for c in codes]].to_numpy() + vb[[f"p_{c}" for c in codes]].to_numpy()) / 2
    bal = balanced_accuracy_score(va["dx"], np.array(codes)[mean.argmax(1)])
    line = next(x for x in out.splitlines() if x.startswith("mean of a and b")).split()[-6:]
    assert float(line[0]) == pytest.approx(bal, abs=1e-4) and float(line[2]) == pytest.approx(mel, abs=1e-4)
    own = next(x for x in out.splitlines() if x.startswith("a ")).split()[-6:]  # each run's own row: its figures
    assert float(own[2]) == pytest.approx(roc_auc_score(pa["dx"] == "mel", pa["p_mel"]), abs=1e-4)


def test_mix_rule_judges_each_seeds_mean_against_the_default_by_shortcuts_rule(two_models, tmp_path):
    """mix.py --default A --with B: the rule's lines hold the default's figures and the mean's (its validation
    balanced accuracy that of the most probable class, recomputed here), and one seed a side gives no answer."""
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score

    a, b = two_models
    out = run_script("benchmarks/mix.py", "--default", a, "--with", b).stdout
    va, vb = (pd.read_csv(r / MIX_FILES[0]) for r in (a, b))
    columns = [f"p_{c}" for c in CODES]
    summed = va[columns].to_numpy() + vb[columns].to_numpy()
    mean = balanced_accuracy_score(va["dx"], np.array(CODES)[summed.argmax(1)])
    own = balanced_accuracy_score(va["dx"], np.array(CODES)[va[columns].to_numpy().argmax(1)])
    assert mean != pytest.approx(own)  # the partner moves it, so the line below tells the two apart
    line = next(x for x in out.splitlines() if x.strip().startswith("val balanced accuracy")).split()
    assert float(line[line.index("default") + 1]) == pytest.approx(own, abs=1e-4)
    assert float(line[line.index("candidate") + 1]) == pytest.approx(mean, abs=1e-4)
    assert "no answer yet: 1 seed(s) a side, the rule needs 3" in out
    proc = subprocess.run([sys.executable, "benchmarks/mix.py", "--default", a, "--with", a, b], cwd=PROJECT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "--default has 1 runs and --with 2" in proc.stderr


def test_shortcut_rule_needs_both_aurocs_to_rise_beyond_the_spread_and_balanced_accuracy_kept():
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    from shortcut import decide

    def run(mel_nv, isic, bal):
        return {"val": {"histo_auroc_melanoma_vs_nevi": mel_nv, "balanced_accuracy": bal},
                "isic2017": {"auroc_melanoma": isic}}
    default = [run(0.78, 0.62, 0.70), run(0.80, 0.64, 0.71), run(0.79, 0.63, 0.72)]  # spreads 0.02, 0.02, 0.02
    better = [run(0.83, 0.70, 0.70), run(0.84, 0.69, 0.69), run(0.82, 0.71, 0.70)]
    out = decide(default, better)
    assert out["figures"]["val melanoma vs confirmed nevi"]["change"] == pytest.approx(0.04)
    assert out["figures"]["ISIC 2017 melanoma AUROC"]["spread"] == pytest.approx(0.02)
    assert out["adopt"]
    within_spread = [run(0.80, 0.70, 0.71), run(0.81, 0.69, 0.71), run(0.79, 0.71, 0.71)]  # +0.01 < 0.02
    assert not decide(default, within_spread)["aurocs_rise"]
    costly = [run(0.85, 0.70, 0.68), run(0.86, 0.69, 0.68), run(0.84, 0.71, 0.68)]  # balanced accuracy -0.03
    out = decide(default, costly)
    assert out["aurocs_rise"] and not out["balanced_accuracy_kept"] and not out["adopt"]
    # a candidate that trained on the archive: every run is compared on its val images alone
    for f in default:
        f["isic2017_val_melanoma"] = f["isic2017"]["auroc_melanoma"] - 0.05
    on_archive = [{**run(0.83, 0.9, 0.70), "trained_on_archive": True, "isic2017_val_melanoma": v}
                  for v in (0.585, 0.595, 0.60)]  # up 0.0133 on the default's 0.57-0.59: within the spread
    out = decide(default, on_archive)
    assert "ISIC 2017 val melanoma AUROC" in out["figures"] and not out["aurocs_rise"]
    assert out["figures"]["ISIC 2017 val melanoma AUROC"]["change"] == pytest.approx(0.04 / 3)
    # one seed a side: no spread to beat, so no answer (not a "yes")
    one = decide(default[:1], better[:1])
    assert one["aurocs_rise"] and one["adopt"] is None and one["seeds"] == 1
    # two seeds: no answer while both AUROCs' means are up, but "no" as soon as either is down (the stop)
    assert decide(default[:2], better[:2])["adopt"] is None
    falling = [run(0.83, 0.60, 0.70), run(0.84, 0.65, 0.70)]  # ISIC 2017 -0.005 on the default's first two
    out = decide(default[:2], falling)
    assert out["stopped"] and out["adopt"] is False and out["figures"]["ISIC 2017 melanoma AUROC"]["change"] < 0
    assert not decide(default[:1], falling[:1])["stopped"]  # one seed down is not yet the stop


def test_hostile_benchmark_gets_every_case_its_status_against_a_real_server(served_model, tmp_path):
    """benchmarks/hostile.py, scaled down (4 clients, a 2000 px 16-bit image, a 60 MB decoding limit)."""
    out = tmp_path / "hostile.json"
    proc = subprocess.run([sys.executable, "benchmarks/hostile.py", "--model", str(served_model), "--clients", "4",
                           "--side", "2000", "--good", "8", "--max-decode-mb", "60", "--json", str(out)],
                          cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(out.read_text())
    assert {name: got for name, _, got in figures["cases"]} == {name: want for name, want, _ in figures["cases"]}
    assert len(figures["cases"]) == 12 and figures["flood"]["bomb_statuses"] == [200]
    assert figures["flood"]["bombs_answered"] == 4 and figures["flood"]["good"] == 8
    assert figures["flood"]["peak_rss_mb"] >= figures["flood"]["peak_rss_mb_before"] > 0
    assert proc.stdout.startswith("machine:") and "server peak RSS" in proc.stdout


def test_behaviour_compare_reports_a_value_that_became_nan_or_infinite():
    """max(0.0, nan) is 0.0: a difference of NaN must be named, not lost in the largest difference."""
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    from behaviour import differences

    assert differences({"a": 0.5, "b": [1.0]}, {"a": 0.5, "b": [1.0 + 1e-7]}) == (pytest.approx(1e-7), [])
    assert differences({"a": 0.5}, {"a": float("nan")}) == (0.0, [".a: 0.5 != nan"])
    assert differences({"a": float("inf")}, {"a": 1.0})[1] == [".a: inf != 1.0"]
    assert differences({"a": float("nan")}, {"a": float("nan")}) == (0.0, [])


def test_ood_benchmark_scores_every_group_through_the_exported_model(served_model, trained_run, isic2017_root,
                                                                     tmp_path):
    """ood.py prints each group's rate at the run's own threshold: the HAM test split's recomputed here with the
    runtime on the run's test images; noise and flat colour are refused whole."""
    from lesion_pl.export.runtime import LesionOnnxClassifier
    from lesion_pl.run import RunDir

    from .conftest import isic2017_slice

    archive = isic2017_slice(isic2017_root, tmp_path / "isic2017", per_class=3)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("report", "export", "evaluations"))
    (run / "export").mkdir()
    shutil.copy(served_model, run / "export" / "model.onnx")
    out = run_script("benchmarks/ood.py", "--run", run, "--isic", archive, "--json", tmp_path / "o.json").stdout
    assert out.startswith("machine: ")
    got = json.loads((tmp_path / "o.json").read_text())
    groups = got["groups"]
    assert groups["ISIC 2017 (train and val)"]["images"] == 18
    assert groups["noise"]["refused"] == groups["flat colour"]["refused"] == 1.0
    rd = RunDir(run)
    dm = rd.datamodule(rd.load_config(), progress=False)
    clf = LesionOnnxClassifier(run / "export" / "model.onnx")
    passing = 1 - clf.predict_arrays(dm.cache[dm.indices("test")]).outside.mean()
    assert groups["HAM10000 test split"]["pass"] == pytest.approx(passing)
    assert f"HAM test passing {passing:.1%} (goal 98%)" in out
    # the run's model card cites what the benchmark measured (RUN/ood_benchmark.json)
    assert json.loads((run / "ood_benchmark.json").read_text()) == got
    assert invoke("report", "--run", run, "--quiet").exit_code == 0
    card = (run / "MODEL_CARD.md").read_text()
    assert (f"benchmarks/ood.py: {got['non_dermoscopic_refused']:.1%} of {got['non_dermoscopic_images']} "
            "non-dermoscopic images refused") in card
    assert f"  - noise: 10 images, {groups['noise']['refused']:.1%} refused" in card


def test_plan_table_reads_a_runs_epochs_accuracy_and_overheads(trained_run):
    proc = run_script("benchmarks/plan_table.py", trained_run)
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("machine:")
    header, row = lines[1].split(), lines[2].split()
    summary = json.loads((trained_run / "summary.json").read_text())
    cal = json.loads((trained_run / "calibration.json").read_text())
    values = dict(zip(["run", "px", "precision", "epochs", "best"], row[:5], strict=True))
    assert header[:2] == ["run", "px"] and values["px"] == str(summary["image_size"])
    assert values["epochs"] == str(summary["epochs"]) and values["best"] == str(summary["best_epoch"])
    assert float(row[-2]) == pytest.approx(cal["val_balanced_accuracy"], abs=5e-5)
    assert lines[-1].startswith("median epoch overhead ") and float(row[7]) > 0  # measured over estimated
