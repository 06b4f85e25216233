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


def predict_table(model: Path, files: list[Path], out: Path | None, batch_size: int, progress: bool) -> int:
    """Returns the number of files that could not be predicted."""
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise LesionPLError(f"--out must end in .csv or .json, got {out}")
    clf = LesionOnnxClassifier(model)
    done, preds, errors = clf.predict_files(files, batch_size=batch_size, progress=progress)
    rows = []
    for path, top, p, mal, probs in zip(done, preds.top_class, preds.top_probability, preds.malignancy,
                                        preds.probabilities):
        rows.append({"file": str(path), "top_class": top, "probability": round(float(p), 6),
                     "malignancy": round(float(mal), 6),
                     **{f"p_{c}": round(float(v), 6) for c, v in zip(clf.classes, probs)}})
    width = max([len(r["file"]) for r in rows] + [4])
    typer.echo(f"{'file':<{width}}  {'top class':<9} {'prob':>6} {'malignancy':>10}")
    for r in rows:
        typer.echo(f"{r['file']:<{width}}  {r['top_class']:<9} {r['probability']:>6.3f} {r['malignancy']:>10.3f}")
    for path, reason in errors:
        typer.secho(f"failed: {reason}", fg="red", err=True)
    if out is not None:
        if out.suffix.lower() == ".json":
            atomic_write_text(out, json.dumps({"model": str(model), "predictions": rows,
                                               "failed": [{"file": str(p), "error": e} for p, e in errors]},
                                              indent=2) + "\n")
        else:
            buf = io.StringIO()
            fields = ["file", "top_class", "probability", "malignancy"] + [f"p_{c}" for c in clf.classes]
            writer = csv.DictWriter(buf, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(out, buf.getvalue())
        typer.echo(f"wrote {len(rows)} predictions to {out}")
    if errors:
        typer.secho(f"{len(errors)} of {len(files)} file(s) could not be predicted", fg="red", err=True)
    return len(errors)
