"""`runs`: the table of run folders, its values read back from each run's own files, sorting, --json, errors."""
from __future__ import annotations

import json
import shutil

from .conftest import invoke


def test_runs_lists_each_run_with_its_own_figures_sorted_and_as_json(trained_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(trained_run, root / "a", ignore=shutil.ignore_patterns("report", "export"))
    shutil.copytree(trained_run, root / "group" / "b", ignore=shutil.ignore_patterns("report", "export"))
    shutil.copytree(trained_run, root / "untested", ignore=shutil.ignore_patterns("report", "export", "test"))
    metrics = root / "group" / "b" / "test" / "metrics.json"
    m = json.loads(metrics.read_text())
    m["balanced_accuracy"] = 0.999  # b is now the best on test
    metrics.write_text(json.dumps(m))
    planned = root / "group" / "b" / "summary.json"  # b was fitted for a trainer.budget of 30 minutes
    planned.write_text(json.dumps({**json.loads(planned.read_text()), "plan": {"budget_s": 1800.0}}))
    r = invoke("runs", root, "--sort", "test_balanced_accuracy", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["run"] for row in rows] == ["group/b", "a", "untested"]  # best first, the unscored last
    a = json.loads((root / "a" / "test" / "metrics.json").read_text())
    summary = json.loads((root / "a" / "summary.json").read_text())
    cal = json.loads((root / "a" / "calibration.json").read_text())
    row = rows[1]
    assert row["test_balanced_accuracy"] == a["balanced_accuracy"]
    assert row["test_auroc_malignant"] == a["auroc_malignant"]
    assert row["epochs"] == summary["epochs"] and row["fit_min"] == summary["fit_seconds"] / 60
    assert row["val_balanced_accuracy"] == cal["val_balanced_accuracy"]
    assert row["code_revision"] == summary["code_revision"] and rows[2]["test_balanced_accuracy"] is None
    assert rows[0]["budget_min"] == 30 and row["budget_min"] is None
    r = invoke("runs", root, "--sort", "test_balanced_accuracy", "--ascending")
    lines = r.output.splitlines()
    assert lines[0].startswith("run ") and "test bal acc" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["a", "group/b", "untested"]
    assert f"{a['balanced_accuracy']:.4f}" in lines[1] and "0.9990" in lines[2]


def test_runs_refuses_an_unknown_column_and_a_missing_folder(tmp_path):
    r = invoke("runs", tmp_path, "--sort", "speed")
    assert r.exit_code == 2 and "--sort 'speed' is not a column" in r.output
    r = invoke("runs", tmp_path / "nowhere")
    assert r.exit_code == 2 and "is not a folder" in r.output
    r = invoke("runs", tmp_path)
    assert r.exit_code == 0 and "no run folders under" in r.output
