"""Each evaluation keeps its own folder: the run's own test split in RUN/test, another source or split in
RUN/evaluations/NAME, none replacing another unless told (--overwrite); report describes the one chosen."""
from __future__ import annotations

import json
import shutil

from PIL import Image

from .conftest import invoke, make_dataset, sample_meta


def _folder_source(ham_root, meta, dest):
    for _, row in meta.iterrows():
        (dest / row["dx"]).mkdir(parents=True, exist_ok=True)
        Image.open(ham_root / "images" / f"{row['image_id']}.jpg").save(dest / row["dx"] / f"{row['image_id']}.jpg")
    return dest


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_two_outside_sets_and_the_runs_own_test_all_survive(trained_run, ham_root, unseen_meta, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("report", "export", "evaluations"))
    own = _metrics(run / "test")
    clinic = _folder_source(ham_root, sample_meta(unseen_meta, 3, seed=11), tmp_path / "clinic")
    kaggle = make_dataset(ham_root, sample_meta(unseen_meta, 2, seed=12), tmp_path / "kaggle", layout="kaggle")

    r = invoke("test", "--run", run, "--data-root", clinic, "--split", "all", "--quiet")
    assert r.exit_code == 0, r.output
    assert f"wrote {run / 'evaluations' / 'clinic-folder'}/metrics.json" in r.output
    r = invoke("test", "--run", run, "--data-root", kaggle, "--split", "all", "--quiet")
    assert r.exit_code == 0, r.output
    a, b = _metrics(run / "evaluations" / "clinic-folder"), _metrics(run / "evaluations" / "kaggle-ham10000")
    assert _metrics(run / "test") == own  # the run's own figures are untouched
    images = len(list(clinic.rglob("*.jpg")))
    assert (a["evaluation"], a["data_root"], a["n_images"]) == ("clinic-folder", str(clinic), images)
    assert (b["evaluation"], b["data_root"]) == ("kaggle-ham10000", str(kaggle))
    assert own["split"] == "test" and own["evaluation"] is None

    # the same name again is refused, and nothing of the first is lost; --overwrite replaces it
    before = (run / "evaluations" / "clinic-folder" / "predictions.csv").read_bytes()
    r = invoke("test", "--run", run, "--data-root", clinic, "--split", "all", "--quiet")
    assert r.exit_code == 2 and "clinic-folder already exists; pass --overwrite" in r.output, r.output
    assert (run / "evaluations" / "clinic-folder" / "predictions.csv").read_bytes() == before
    r = invoke("test", "--run", run, "--data-root", clinic, "--split", "all", "--no-tta", "--overwrite", "--quiet")
    assert r.exit_code == 0, r.output
    assert _metrics(run / "evaluations" / "clinic-folder")["tta"] is False
    assert not [p for p in (run / "evaluations").iterdir() if p.name.startswith(".")]  # no temp folder left

    # another split of the run's own data is an evaluation of its own too; --name and --out choose the folder
    r = invoke("test", "--run", run, "--split", "val", "--quiet")
    assert r.exit_code == 0, r.output
    assert _metrics(run / "evaluations" / "val")["split"] == "val"
    r = invoke("test", "--run", run, "--data-root", clinic, "--split", "all", "--name", "clinic-2026", "--quiet")
    assert r.exit_code == 0 and (run / "evaluations" / "clinic-2026" / "metrics.json").is_file(), r.output
    r = invoke("test", "--run", run, "--data-root", clinic, "--split", "all", "--out", tmp_path / "elsewhere",
               "--quiet")
    assert r.exit_code == 0 and _metrics(tmp_path / "elsewhere")["evaluation"] == "elsewhere", r.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    r = invoke("test", "--run", run, "--data-root", clinic, "--split", "all", "--out", busy, "--overwrite")
    assert r.exit_code == 2 and "holds files that are not an evaluation" in r.output, r.output
    assert (busy / "notes.txt").read_text() == "mine"  # never replaced, even with --overwrite
    r = invoke("test", "--run", run, "--data-root", clinic, "--split", "all", "--name", "../escape", "--quiet")
    assert r.exit_code == 2 and "must be a plain folder name" in r.output and not (run / "escape").exists()
    assert _metrics(run / "test") == own

    # each has its own report, whose header says which images it describes and lists the others
    r = invoke("report", "--run", run, "--quiet")
    assert r.exit_code == 0, r.output
    page = (run / "report" / "index.html").read_text()
    assert "All figures are on the held-out test split" in page
    assert "Other evaluations of this run" in page and "&#x27;kaggle-ham10000&#x27;" in page
    r = invoke("report", "--run", run, "--evaluation", "kaggle-ham10000", "--quiet")
    assert r.exit_code == 0, r.output
    page = (run / "evaluations" / "kaggle-ham10000" / "report" / "index.html").read_text()
    assert f"All figures are on all {b['n_images']} images of {kaggle} (test --split all, evaluation" in page
    assert "the run&#x27;s own test split" in page
    r = invoke("report", "--run", run, "--evaluation", "nowhere")
    assert r.exit_code == 2 and "no evaluation 'nowhere'" in r.output and "kaggle-ham10000" in r.output, r.output
