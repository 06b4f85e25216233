"""`lesion-pl runs [DIR]`: one row per run folder under DIR, from the files each run holds (summary.json,
calibration.json, test/metrics.json, evaluations/*/metrics.json): what it trained, how long, and the headline
figures it has. No torch: it reads JSON only."""
from __future__ import annotations

import math
from pathlib import Path

from .errors import LesionPLError
from .io import read_json
from .run import RunDir

# column -> (header, format); the figures are None where a run has not been scored that way
COLUMNS = {
    "run": ("run", "{}"),
    "model": ("model", "{}"),
    "size": ("px", "{}"),
    "precision": ("precision", "{}"),
    "epochs": ("epochs", "{}"),
    "fit_min": ("fit min", "{:.1f}"),
    "budget_min": ("budget min", "{:.0f}"),  # trainer.budget, where the run was planned for one
    "val_balanced_accuracy": ("val bal acc", "{:.4f}"),
    "val_auroc_malignant": ("val mal AUROC", "{:.4f}"),
    "test_balanced_accuracy": ("test bal acc", "{:.4f}"),
    "test_auroc_malignant": ("test mal AUROC", "{:.4f}"),
    "test_auroc_melanoma": ("test mel AUROC", "{:.4f}"),
    "confirmed_auroc_malignant": ("confirmed mal AUROC", "{:.4f}"),
    "external": ("other evaluations (melanoma AUROC)", "{}"),
    "code_revision": ("code", "{}"),
}
DEPTH = 3  # how deep under DIR run folders are looked for


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def find_runs(root: Path) -> list[Path]:
    """Folders under `root` (itself included) that `fit` made: a config.yaml beside a summary.json or checkpoints/;
    an ensemble's members are part of their run, not runs of their own."""
    found = []

    def walk(folder: Path, depth: int) -> None:
        if (folder / "config.yaml").is_file() and ((folder / "summary.json").is_file()
                                                   or (folder / "checkpoints").is_dir()):
            found.append(folder)
            return
        if depth < DEPTH:
            for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                walk(child, depth + 1)
    walk(root, 0)
    return found


def run_row(path: Path, root: Path) -> dict:
    run = RunDir(path)
    summary, cal, test = (read_json(p) or {} for p in (run.summary, run.calibration, run.test / "metrics.json"))
    fit = _number(summary.get("fit_seconds"))
    external = {}
    for name in run.evaluation_names():
        value = _number((read_json(run.evaluation(name) / "metrics.json") or {}).get("auroc_melanoma"))
        external[name] = value
    return {
        "run": path.relative_to(root).as_posix() if path != root else path.name,
        "model": summary.get("model"),
        "size": summary.get("image_size"),
        "precision": summary.get("precision"),
        "epochs": summary.get("epochs"),
        "fit_min": None if fit is None else fit / 60,
        "budget_min": None if (budget := _number((summary.get("plan") or {}).get("budget_s"))) is None else budget / 60,
        "val_balanced_accuracy": _number(cal.get("val_balanced_accuracy", summary.get("best_val_balanced_accuracy"))),
        "val_auroc_malignant": _number(cal.get("val_auroc_malignant")),
        "test_balanced_accuracy": _number(test.get("balanced_accuracy")),
        "test_auroc_malignant": _number(test.get("auroc_malignant")),
        "test_auroc_melanoma": _number(test.get("auroc_melanoma")),
        "confirmed_auroc_malignant": _number((test.get("histo_confirmed") or {}).get("auroc_malignant")),
        "external": external,
        "code_revision": summary.get("code_revision"),
    }


def runs_table(root: Path, sort: str = "run", descending: bool | None = None) -> list[dict]:
    """The rows of every run under `root`, sorted by a column (figures: best first; runs without it last)."""
    if not root.is_dir():
        raise LesionPLError(f"{root} is not a folder: give the folder that holds run folders (e.g. runs)")
    if sort not in COLUMNS or sort == "external":
        raise LesionPLError(f"--sort {sort!r} is not a column: use one of "
                            f"{', '.join(k for k in COLUMNS if k != 'external')}")
    rows = [run_row(p, root) for p in find_runs(root)]
    numeric = sort not in ("run", "model", "precision", "code_revision")
    if descending is None:
        descending = numeric and sort not in ("fit_min",)
    present = [r for r in rows if r[sort] is not None]
    present.sort(key=lambda r: r[sort] if numeric else str(r[sort]), reverse=descending)
    return present + [r for r in rows if r[sort] is None]


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "external":
        return ", ".join(f"{k} {'-' if v is None else f'{v:.4f}'}" for k, v in value.items()) or "-"
    return COLUMNS[key][1].format(value)


def format_table(rows: list[dict]) -> str:
    """Aligned text: numbers right, words left."""
    keys = list(COLUMNS)
    cells = [[COLUMNS[k][0] for k in keys]] + [[_cell(k, r[k]) for k in keys] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    left = {"run", "model", "precision", "external", "code_revision"}
    return "\n".join("  ".join(c.ljust(w) if k in left else c.rjust(w) for c, w, k in zip(row, widths, keys,
                                                                                          strict=True)).rstrip()
                     for row in cells)
