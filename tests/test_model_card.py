"""The model card (MODEL_CARD.md): `report` writes it from the run's own files, `export` and `report` copy it beside
model.onnx, and every figure in it is the run's (each recomputed here from the files, formatted here)."""
from __future__ import annotations

import json
import re
import shutil

import pandas as pd

from .conftest import invoke


def ci(m: dict, key: str) -> str:
    lo, hi = m["ci95"][key]
    return f"{m[key]:.4f} [{lo:.3f}, {hi:.3f}]"


def test_report_writes_the_card_from_the_runs_files_and_export_ships_it(trained_run, small_ham, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("report", "export", "MODEL_CARD.md"))
    assert invoke("export", "--run", run, "--quiet").exit_code == 0
    assert not (run / "export" / "MODEL_CARD.md").exists()  # no card before `report`
    r = invoke("report", "--run", run, "--quiet")
    assert r.exit_code == 0, r.output
    card = (run / "MODEL_CARD.md").read_text()
    assert (run / "export" / "MODEL_CARD.md").read_text() == card  # report ran after export: it copied the card
    assert "href='../MODEL_CARD.md'" in (run / "report" / "index.html").read_text()

    splits = pd.read_csv(run / "splits.csv")["split"].value_counts()
    assert (f"train {splits['train']}, validation {splits['val']}, test {splits['test']}; split by lesion") in card
    test = json.loads((run / "test" / "metrics.json").read_text())
    row = next(line for line in card.splitlines() if line.startswith("| test split, all lesions |"))
    assert row.split(" | ")[1] == str(test["n_images"])
    for key in ("balanced_accuracy", "auroc_malignant", "auroc_melanoma", "auroc_macro"):
        assert ci(test, key) in row, key
    cal = json.loads((run / "calibration.json").read_text())
    for name, op in cal["operating_points"].items():
        t = test["operating_points"][name]
        lo, hi = t["ci95"]["sensitivity"]
        assert (f"**{name}**: refer at p >= {op['threshold']:.4f}" in card
                and f"sensitivity {t['sensitivity']:.3f} [{lo:.3f}, {hi:.3f}]" in card), name
    o = cal["ood"]
    assert f"is above {o['threshold']:.4g} is refused" in card and f"fitted on {o['n_train']} training images" in card
    assert f"On the test split: {test['ood']['pass']:.1%} of {test['n_images']} dermoscopic images pass" in card
    summary = json.loads((run / "summary.json").read_text())
    assert f"Trained by the code at revision `{summary['code_revision']}`" in card
    assert re.search(r"this card written by `[0-9a-f]{12}(-dirty)?`", card)  # this checkout's revision
    # the small data set is HAM10000's (by its metadata file): its licence, and that the weights inherit it
    assert "CC BY-NC 4.0" in card and "Tschandl" in card and "inherit the non-commercial terms" in card
    # subgroups: the sexes' error rates from the test predictions and the metadata
    preds = pd.read_csv(run / "test" / "predictions.csv")
    sex = pd.read_csv(small_ham / "HAM10000_metadata.csv").set_index("image_id").loc[preds["image_id"], "sex"]
    wrong = (preds["pred"] != preds["dx"]).to_numpy()
    for value in sex.dropna().unique():
        mask = (sex == value).to_numpy()
        assert f"| {value} | {mask.sum()} | {wrong[mask].sum()} | {wrong[mask].mean():.3f} |" in card, value


def test_a_card_before_test_says_so_and_export_copies_an_existing_card(trained_run, tmp_path):
    from lesion_pl.classes import HAM10000
    from lesion_pl.evaluate.model_card import write_model_card
    from lesion_pl.run import RunDir

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("report", "export", "test", "MODEL_CARD.md"))
    write_model_card(RunDir(run), HAM10000)
    assert "Not tested yet" in (run / "MODEL_CARD.md").read_text()
    r = invoke("export", "--run", run, "--quiet")
    assert r.exit_code == 0, r.output
    assert (run / "export" / "MODEL_CARD.md").read_text() == (run / "MODEL_CARD.md").read_text()
