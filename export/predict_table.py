"""`predict`: run the ONNX runtime over files, print a table, write CSV/JSON, report bad files."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer

from lesion_pl.errors import LesionPLError
from lesion_pl.io import atomic_write_text

from .runtime import LesionOnnxClassifier


REFER, NO_REFER = "refer", "no referral at this threshold"


def predict_table(model: Path, files: list[Path], out: Path | None, batch_size: int, tta: bool = False,
                  progress: bool = False) -> int:
    """Returns the number of files that could not be predicted."""
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise LesionPLError(f"--out must end in .csv or .json, got {out}")
    clf = LesionOnnxClassifier(model)
    done, preds, errors = clf.predict_files(files, batch_size=batch_size, tta=tta, progress=progress)
    refer = preds.refer if preds.refer is not None else [None] * len(preds)
    rows = []
    for path, top, p, mal, r, probs in zip(done, preds.top_class, preds.top_probability, preds.malignancy, refer,
                                           preds.probabilities):
        rows.append({"file": str(path), "top_class": top, "probability": round(float(p), 6),
                     "malignancy": round(float(mal), 6), "referral": "" if r is None else (REFER if r else NO_REFER),
                     **{f"p_{c}": round(float(v), 6) for c, v in zip(clf.classes, probs)}})
    op = clf.operating_points.get("malignant")
    if op:
        typer.echo(f"referral threshold: malignancy >= {op['threshold']:.3f}, chosen on validation for sensitivity "
                   f">= {op['target_sensitivity']:.2f} (validation sensitivity {op['val_sensitivity']:.3f}, "
                   f"specificity {op['val_specificity']:.3f}). A research tool, not a diagnostic device.")
    width = max([len(r["file"]) for r in rows] + [4])
    typer.echo(f"{'file':<{width}}  {'top class':<9} {'prob':>6} {'malignancy':>10}  referral")
    for r in rows:
        typer.echo(f"{r['file']:<{width}}  {r['top_class']:<9} {r['probability']:>6.3f} {r['malignancy']:>10.3f}  "
                   f"{r['referral']}")
    for path, reason in errors:
        typer.secho(f"failed: {reason}", fg="red", err=True)
    if out is not None:
        if out.suffix.lower() == ".json":
            atomic_write_text(out, json.dumps({"model": str(model), "predictions": rows,
                                               "failed": [{"file": str(p), "error": e} for p, e in errors]},
                                              indent=2) + "\n")
        else:
            buf = io.StringIO()
            fields = ["file", "top_class", "probability", "malignancy", "referral"] + [f"p_{c}" for c in clf.classes]
            writer = csv.DictWriter(buf, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(out, buf.getvalue())
        typer.echo(f"wrote {len(rows)} predictions to {out}")
    if errors:
        typer.secho(f"{len(errors)} of {len(files)} file(s) could not be predicted", fg="red", err=True)
    return len(errors)
