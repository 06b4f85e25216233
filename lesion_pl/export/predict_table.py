"""`predict`: run the ONNX runtime over files (with clinical metadata from a CSV where given), print
a table, write CSV/JSON, report bad files."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import typer

from lesion_pl import clinical
from lesion_pl.calibration import promise_text, views_note
from lesion_pl.errors import LesionPLError
from lesion_pl.io import atomic_write_json, atomic_write_text, read_utf8, require_writable, spreadsheet_safe
from lesion_pl.ood import OUTSIDE

from .runtime import LesionOnnxClassifier

KEY_COLUMNS = ("image", "image_id", "image_name", "file")


def read_metadata_csv(path: Path, files: list[Path], clf: LesionOnnxClassifier) -> list[dict | None]:
    """One dict of the CSV's row per file (matched on the file name without its suffix), or None."""
    if not path.is_file():
        raise LesionPLError(f"metadata file {path} does not exist")
    with io.StringIO(read_utf8(path), newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        key = next((c for c in KEY_COLUMNS if c in columns), None)
        if key is None:
            raise LesionPLError(f"{path}: no column naming the image (one of {', '.join(KEY_COLUMNS)}); "
                                f"columns are {', '.join(columns) or 'none'}")
        wanted = [n for f, c in clf.clinical_fields.items() for n in (f, c)]
        if not set(wanted) & set(columns):
            raise LesionPLError(f"{path}: none of the metadata columns this model reads ({', '.join(wanted)}); "
                                f"columns are {', '.join(columns)}")
        rows = {Path(r[key]).stem: r for r in reader if r.get(key)}
    return [rows.get(Path(f).stem) for f in files]


def _echo_metadata_use(metadata: list[dict | None], source: Path, clf: LesionOnnxClassifier) -> None:
    records = clf.clinical_records(metadata)
    matched, usable = sum(m is not None for m in metadata), int(clinical.encode(records, clf.clinical)[1].sum())
    typer.echo(f"clinical metadata: {matched} of {len(metadata)} image(s) have a row in {source}, {usable} with a "
               f"usable {'/'.join(clf.clinical_fields)} (fused with weight {clf.clinical['weight']:.2f}; "
               "the others: image only)")
    for note in clinical.unrecognised_notes(records, clf.clinical):
        typer.secho(f"{source}: {note}", fg="yellow", err=True)


def predict_table(model: Path, files: list[Path], out: Path | None, batch_size: int, tta: bool | None = None,
                  progress: bool = False, metadata_csv: Path | None = None) -> int:
    """Returns the number of files that could not be predicted."""
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise LesionPLError(f"--out must end in .csv or .json, got {out}")
    if out is not None:
        require_writable(out, "--out")  # found now, not after every image is predicted
    clf = LesionOnnxClassifier(model)
    metadata = None
    if metadata_csv is not None and not clf.clinical:
        typer.secho(f"{model} was exported without a clinical-metadata model (calibration.clinical: false); "
                    f"{metadata_csv} is not used, every prediction is from the image alone", fg="yellow", err=True)
    elif metadata_csv is not None:
        metadata = read_metadata_csv(metadata_csv, files, clf)
        _echo_metadata_use(metadata, metadata_csv, clf)
    done, preds, errors = clf.predict_files(files, batch_size=batch_size, tta=tta, progress=progress,
                                            metadata=metadata)
    rows = preds.rows(done, clf.warnings)
    points = {"": clf.operating_points_image_only}
    if metadata is not None and any(preds.with_metadata):
        points = {" (with metadata)": clf.operating_points}
        if not all(preds.with_metadata):
            points[" (image only)"] = clf.operating_points_image_only
    for which, ops in points.items():
        op = ops.get("malignant")
        if op:
            typer.echo(f"referral threshold{which}: malignancy >= {op['threshold']:.3f}, {promise_text(op)}.")
    if clf.ood is not None:
        typer.echo(f"{clf.ood.describe()}: an image above it is {OUTSIDE}, and gets no class and no referral.")
    views = clf.tta if tta is None else tta
    typer.echo("Each image scored as the mean of its 8 flips/90-degree rotations." if views
               else "Each image scored on one view.")
    note = views_note(views, clf.tta)
    if note:
        typer.secho(f"{model}: {note}", fg="yellow", err=True)
    typer.echo("A research tool, not a diagnostic device.")
    width = max([len(r["file"]) for r in rows] + [4])
    meta_col = metadata is not None
    typer.echo(f"{'file':<{width}}  {'top class':<9} {'prob':>6} {'malignancy':>10}  "
               + ("metadata  " if meta_col else "") + "referral")
    for r in rows:
        prob = "" if r["probability"] is None else f"{r['probability']:.3f}"
        typer.echo(f"{r['file']:<{width}}  {r['top_class']:<9} {prob:>6} {r['malignancy']:>10.3f}  "
                   + (f"{r['metadata']:<8}  " if meta_col else "") + r["referral"])
    for path, why in clf.warnings.items():
        typer.secho(f"warning: {path}: {why}; do not trust its prediction", fg="yellow", err=True)
    for _, reason in errors:
        typer.secho(f"failed: {reason}", fg="red", err=True)
    if out is not None:
        if out.suffix.lower() == ".json":
            atomic_write_json(out, {"model": str(model), "predictions": rows,
                                    "failed": [{"file": str(p), "error": e} for p, e in errors]})
        else:
            buf = io.StringIO()
            fields = ["file", "top_class", "probability", "malignancy", "referral"]
            fields += (["metadata"] if metadata is not None else []) + (["ood_score", "outside"] if clf.ood else [])
            fields += [f"p_{c}" for c in clf.classes]
            fields += ["warning", "error"]
            writer = csv.DictWriter(buf, fieldnames=fields)
            writer.writeheader()
            failed = ({"file": str(p), "error": e} for p, e in errors)  # the failed files too, with why
            for row in [*rows, *failed]:
                writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()})
            atomic_write_text(out, buf.getvalue())
        typer.echo(f"wrote {len(rows)} predictions to {out}" + (f", and the {len(errors)} failed file(s) with "
                                                               "their reason" if errors else ""))
    if errors:
        typer.secho(f"{len(errors)} of {len(files)} file(s) could not be predicted", fg="red", err=True)
    return len(errors)
