"""lesion-pl command line: fit, calibrate, test, report, explain, export, predict and serve, plus data tools.

Thin on purpose: parses arguments and calls lesion_pl; heavy imports happen inside the commands.
"""
from __future__ import annotations

import errno
import functools
import sys
from pathlib import Path

import typer

from .errors import LesionPLError
from .export.limits import Limits
from .formats import FORMATS
from .run import RunDir

app = typer.Typer(help="Train, evaluate and export CNN classifiers for dermoscopic skin-lesion images.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Datasets: summary (sizes, classes, splits), check (bad images), download.",
                      no_args_is_help=True)
app.add_typer(data_app, name="data")


# what the file system says when an output cannot be written: a full or read-only disk, no permission, a
# file where a folder should be (or the other way round)
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR,
                errno.EISDIR}


def friendly_errors(fn):
    """A LesionPLError, a file that cannot be written, or a package the command needs that this install left out (an
    extra) becomes one line on stderr and exit code 2, not a traceback (outputs are written to temp files and
    renamed, so nothing half-written is left)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LesionPLError as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as e:  # lesion-pl installed without the extra this command needs
            extra = "serve" if fn.__name__ == "serve" else "train"
            typer.secho(f"error: `lesion-pl {fn.__name__.replace('_', ' ')}` needs {e.name}, which this install of "
                        f"lesion-pl leaves out: pip install 'lesion-pl[{extra}]'", fg="red", err=True)
            raise typer.Exit(2) from None
        except OSError as e:
            if e.errno not in WRITE_ERRORS:
                raise
            where = f" {e.filename}" if e.filename else ""
            typer.secho(f"error: cannot write{where}: {e.strerror}", fg="red", err=True)
            raise typer.Exit(2) from None
    return wrapper


CONFIG_OPT = typer.Option(None, "--config", "-c", help="YAML config (default: configs/ham10000.yaml).")
DATA_ROOT_OPT = typer.Option(None, "--data-root", "-d",
                             help="Dataset folder (default: $LESION_PL_DATA/ham10000, else data/ham10000).")
RUN_OPT = typer.Option(..., "--run", "-r", help="Run folder made by `fit`.")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="No progress bars.")
FORMAT_OPT = typer.Option(None, "--format", "-f",
                          help=f"Dataset format: {', '.join(FORMATS)}.")
SKIP_BAD_OPT = typer.Option(False, "--skip-bad-images",
                            help="Leave out unreadable images (counted) instead of failing.")
SET_OPT = typer.Option(None, "--set", "-s", help="Override a config key: --set data.image_size=96 (repeatable).")


@app.command()
@friendly_errors
def fit(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder for config, splits, checkpoints, logs."),
    config: Path | None = CONFIG_OPT,
    data_root: Path | None = DATA_ROOT_OPT,
    max_epochs: int | None = typer.Option(None, help="Override trainer.max_epochs."),
    budget: str | None = typer.Option(None, help="Wall clock for all of fit, e.g. 00:00:30:00 (trainer.budget): "
                                      "fit times this machine and plans the input size and the training time."),
    seed: int | None = typer.Option(None, help="Override the seed (training and split)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last.ckpt."),
    data_format: str | None = FORMAT_OPT,
    skip_bad_images: bool = SKIP_BAD_OPT,
    accelerator: str | None = typer.Option(None, help="Override trainer.accelerator: auto, cpu or gpu."),
    devices: str | None = typer.Option(None, help="Override trainer.devices: a count per machine, or auto."),
    num_nodes: int | None = typer.Option(None, help="Override trainer.num_nodes (machines, e.g. under SLURM)."),
    strategy: str | None = typer.Option(None, help="Override trainer.strategy, e.g. ddp."),
    overrides: list[str] | None = SET_OPT,
    quiet: bool = QUIET_OPT,
):
    """Train a model; writes the resolved config, splits.csv, logs and checkpoints into --out.

    Several devices or machines train with Lightning's DDP (one process per device); only the
    first process writes the summary. `--set trainer.members=3` trains an ensemble of 3 (into
    OUT/members/0..2, one after another, sharing trainer.max_time); every later command uses all of them.
    """
    from lesion_pl.config import load_config
    from lesion_pl.terminal import format_fit
    from lesion_pl.training import fit as run_fit

    sets = list(overrides or [])
    if data_root is not None:
        sets.append(f"data.root={data_root}")
    if data_format is not None:
        sets.append(f"data.format={data_format}")
    if skip_bad_images:
        sets.append("data.skip_bad_images=true")
    if max_epochs is not None:
        sets.append(f"trainer.max_epochs={max_epochs}")
    if budget is not None:
        sets.append(f"trainer.budget={budget}")
    if seed is not None:
        sets += [f"seed={seed}", f"data.splits.seed={seed}"]
    for key, value in (("accelerator", accelerator), ("devices", devices), ("num_nodes", num_nodes),
                       ("strategy", strategy)):
        if value is not None:
            sets.append(f"trainer.{key}={value}")
    if resume and config is None and (out / "config.yaml").exists():
        config = out / "config.yaml"
    cfg = load_config(config, sets)
    with RunDir(out).lock("fit", create=True):
        summary = run_fit(cfg, out, resume=resume, progress=not quiet)
    if summary is None:  # a DDP process other than the first
        return
    if summary["skipped_bad_images"]:
        typer.secho(f"warning: skipped {len(summary['skipped_bad_images'])} missing or unreadable image(s); "
                    f"listed in {out / 'summary.json'}", fg="yellow", err=True)
    if summary["split_note"]:
        typer.secho(f"warning: {summary['split_note']}", fg="yellow", err=True)
    typer.echo(format_fit(summary, out))


@app.command()
@friendly_errors
def test(
    run: Path = RUN_OPT,
    data_root: Path | None = DATA_ROOT_OPT,
    split: str = typer.Option("test", help="Which split to evaluate: test, val, train or all."),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Average the 8 flips/90-degree rotations of each image (default: as the run "
        "was calibrated, calibration.tta)."),
    data_format: str | None = FORMAT_OPT,
    skip_bad_images: bool = SKIP_BAD_OPT,
    name: str | None = typer.Option(
        None, "--name", help="Name of this evaluation: RUN/evaluations/NAME (default: the split on the run's own "
        "data, else the data root's folder name and format)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write this evaluation into DIR instead."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an evaluation folder of the same name."),
    overrides: list[str] | None = typer.Option(
        None, "--set", "-s", help="How to read the data (data.* keys only, repeatable): --set "
        "'data.columns={image: image, label: dx}' --set 'data.where={split: val}'."),
    quiet: bool = QUIET_OPT,
):
    """Evaluate the run's best checkpoint (calibrated): metrics.json, predictions.csv and plots.

    The run's own test split writes RUN/test/; any other split or source (--data-root DIR [--format F]
    --split all) writes RUN/evaluations/NAME/, so no evaluation replaces another. Another source may hold no
    image the run trained or validated on. Where the data records how each diagnosis was made (dx_type), the
    figures on histopathology-confirmed lesions are given beside the all-lesion ones."""
    from lesion_pl.evaluate.run_test import test_run
    from lesion_pl.terminal import format_report

    with RunDir(run).lock("test"):
        report = test_run(run, data_root, split, tta=tta, progress=not quiet, data_format=data_format,
                          skip_bad_images=skip_bad_images, name=name, out=out, overwrite=overwrite,
                          data_overrides=list(overrides or []))
    typer.echo(format_report(report))
    typer.echo(f"\nwrote {report['out']}/metrics.json, predictions.csv"
               + ("" if report.get("binary_target") else ", confusion_matrix.png, roc.png, reliability.png"))


@app.command()
@friendly_errors
def calibrate(
    run: Path = RUN_OPT,
    data_root: Path | None = DATA_ROOT_OPT,
    quiet: bool = QUIET_OPT,
):
    """Fit temperature scaling, the class-prior correction, the clinical-metadata fusion and the referral
    thresholds on the validation split (fit does this too)."""
    from lesion_pl.evaluate.calibrate import calibrate_run
    from lesion_pl.terminal import format_calibration

    with RunDir(run).lock("calibrate"):
        c = calibrate_run(run, data_root, progress=not quiet)
    typer.echo(format_calibration(c))
    typer.echo(f"wrote {run / 'calibration.json'}")


@app.command()
@friendly_errors
def export(
    run: Path = RUN_OPT,
    opset: int = typer.Option(18, help="ONNX opset (17 or newer)."),
    int8: bool = typer.Option(False, "--int8", help="Also write model.int8.onnx and compare it with fp32."),
    per_channel: bool | None = typer.Option(
        None, "--per-channel/--per-tensor", help="int8 weight scales per output channel or per tensor (default: per "
        "channel where the network has depthwise convolutions, e.g. EfficientNet-Lite, else per tensor)."),
    web: Path | None = typer.Option(None, "--web", help="Also write an offline page into this folder: the model "
                                       "runs in the browser (onnxruntime-web), images never leave the device."),
    web_int8: bool = typer.Option(False, "--web-int8", help="The offline page runs model.int8.onnx (implies --int8)."),
    ort_web: Path | None = typer.Option(None, "--ort-web", help="onnxruntime-web's npm tarball, where the npm "
                                           "registry cannot be reached (default: fetched once, then cached)."),
    data_root: Path | None = DATA_ROOT_OPT,
    quiet: bool = QUIET_OPT,
):
    """Export the best checkpoint to RUN/export/model.onnx and verify it against PyTorch on real images."""
    from lesion_pl.export.run_export import export_run
    from lesion_pl.terminal import format_export

    with RunDir(run).lock("export"):
        r = export_run(run, opset=opset, int8=int8 or web_int8, data_root=data_root, progress=not quiet,
                       per_channel=per_channel)
    typer.echo(format_export(r))
    if web is not None:
        from lesion_pl.export.web_export import export_web

        w = export_web(RunDir(run).onnx_int8 if web_int8 else RunDir(run).onnx, web, ort_web,
                       progress=not quiet)
        typer.echo(f"offline page: {w['folder']} ({w['bytes'] / 2**20:.1f} MB, onnxruntime-web "
                   f"{w['onnxruntime_web']}); open it through any static server, e.g. "
                   f"`python -m http.server --directory {w['folder']} 8080`, then http://127.0.0.1:8080/")


def _expand(inputs: list[Path]) -> list[Path]:
    """Files as given, folders as the image files under them (the formats lesion-pl decodes); an error if that
    finds none."""
    from lesion_pl.preprocess import SUFFIXES

    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in SUFFIXES)
        else:
            files.append(item)  # a missing or unreadable file is reported on its own line later
    if not files:
        raise LesionPLError(f"no image files in {', '.join(map(str, inputs))}")
    return files


@app.command()
@friendly_errors
def predict(
    images: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    model: Path = typer.Option(..., "--model", "-m", help="An ONNX file made by `export`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the predictions to a .csv or .json file."),
    batch_size: int = typer.Option(32, help="Images per onnxruntime call."),
    limit: int | None = typer.Option(None, min=1, help="Predict only the first N files found."),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Average the 8 flips/90-degree rotations of each image (default: as the model's "
        "run was calibrated; --no-tta is 8x faster, its thresholds fitted on other scores)."),
    metadata: Path | None = typer.Option(
        None, "--metadata", help="A CSV of clinical metadata: a column naming the image (image, image_id, image_name "
        "or file; matched on the file name without suffix) and age, sex, site (or the training data's names, "
        "e.g. localization). Images without a row: image only."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Predict with an exported model (onnxruntime only, no torch): top class, probability, malignancy."""
    from lesion_pl.export.predict_table import predict_table

    files = _expand(images)[:limit]
    failed = predict_table(model, files, out, batch_size, tta=tta, progress=not quiet and len(files) > 50,
                           metadata_csv=metadata)
    if failed:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def serve(
    model: Path = typer.Option(..., "--model", "-m", help="An ONNX file made by `export`."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface; put it behind TLS)."),
    port: int = typer.Option(8000, min=1, max=65535),
    token: str | None = typer.Option(None, envvar="LESION_PL_TOKEN", show_envvar=True,
                                        help="Every API call must send 'Authorization: Bearer TOKEN'."),
    max_image_mb: float = typer.Option(Limits.max_image_mb, min=0.01, help="Largest file accepted, per image."),
    max_images: int = typer.Option(Limits.max_images, min=1, help="Most images in one request."),
    max_megapixels: float = typer.Option(Limits.max_megapixels, min=0.01, help="Largest decoded image, refused "
                                         "before decoding."),
    max_decode_mb: float = typer.Option(Limits.max_decode_mb, min=1, help="Memory decoding one image may take "
                                        "(16-bit and transparent images take more per pixel), refused before "
                                        "decoding."),
    decode_budget_mb: float = typer.Option(Limits.decode_budget_mb, min=1, help="Memory all decodes at once may "
                                           "take; the others wait."),
    max_batch: int = typer.Option(1, min=1, help="Run the images of concurrent requests together, up to this many "
                                  "(1: each request on its own, the faster on a 2-core CPU: benchmarks/RESULTS.md)."),
    threads: int | None = typer.Option(None, min=1, help="onnxruntime threads (default: its own choice, the "
                                          "machine's physical cores)."),
):
    """Serve an exported model over HTTP (no torch): POST /predict, GET /model, /health, a page at /, docs at /docs.

    On 127.0.0.1 (the default) it answers only requests addressed to this machine's own names (a web page elsewhere
    cannot reach it through DNS rebinding); on another address, give it a --token."""
    import uvicorn

    from lesion_pl.export.serve import LOOPBACK, create_app

    if token is not None and not token.strip():
        raise LesionPLError("--token (or $LESION_PL_TOKEN) is empty, which would refuse every call: give a token, "
                            "or unset it")
    limits = Limits(max_image_mb=max_image_mb, max_images=max_images, max_megapixels=max_megapixels,
                    max_decode_mb=max_decode_mb, decode_budget_mb=decode_budget_mb)
    loopback = host in LOOPBACK
    app_ = create_app(model, token=token, limits=limits, max_batch=max_batch, threads=threads,
                      allowed_hosts=LOOPBACK if loopback else None)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    typer.echo(f"serving {model} at {where} (page {where}/, docs {where}/docs)"
               + ("; every API call needs the token" if token else "; no token: whoever reaches the port can call it"))
    if not token and not loopback:
        typer.secho(f"warning: listening on {host} without a token: anyone on the network can use the model; "
                    "pass --token (and put TLS in front)", fg="yellow", err=True)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
@friendly_errors
def report(
    run: Path = typer.Option(..., "--run", "-r", help="Run folder made by `fit` and `test`."),
    data_root: Path | None = typer.Option(
        None, "--data-root", "-d", help="Where the tested images are now (default: where the last `test` read them "
        "for --split all, else the run's data root)."),
    evaluation: str | None = typer.Option(
        None, "--evaluation", "-e", help="Report on RUN/evaluations/NAME (default: the run's own test split)."),
    quiet: bool = QUIET_OPT,
):
    """Write one self-contained page of metrics, curves, galleries and error analysis: RUN/report/index.html
    for the run's own test split, RUN/evaluations/NAME/report/index.html for --evaluation NAME."""
    from lesion_pl.evaluate.report import build_report

    with RunDir(run).lock("report"):
        page = build_report(run, data_root, progress=not quiet, evaluation=evaluation)
    typer.echo(f"wrote {page}")


@app.command()
@friendly_errors
def runs(
    folder: Path = typer.Argument(Path("runs"), help="The folder that holds run folders (searched 3 levels deep)."),
    sort: str = typer.Option("run", "--sort", "-s", help="Column to sort by: run, model, size, epochs, fit_min, "
                             "val_balanced_accuracy, val_auroc_malignant, test_balanced_accuracy, "
                             "test_auroc_malignant, test_auroc_melanoma, confirmed_auroc_malignant, code_revision "
                             "(figures best first)."),
    ascending: bool = typer.Option(False, "--ascending", help="Smallest first."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
):
    """One table of the runs under a folder: model, input size, epochs, fit time, validation and test figures,
    the figures on confirmed lesions and other evaluations, and the code's revision."""
    import json

    from lesion_pl.runs_table import format_table, runs_table

    rows = runs_table(folder, sort, False if ascending else None)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
    elif not rows:
        typer.echo(f"no run folders under {folder} (a run folder holds config.yaml and summary.json, made by fit)")
    else:
        typer.echo(format_table(rows))


@app.command()
@friendly_errors
def explain(
    images: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    run: Path = RUN_OPT,
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for the overlays (default RUN/explain)."),
):
    """Grad-CAM overlays with the prediction, one PNG per image."""
    from lesion_pl.evaluate.explain import explain_images
    from lesion_pl.ood import OUTSIDE

    files = _expand(images)
    done, errors = explain_images(files, run, out)
    for path, png, top, p, mal, outside in done:
        typer.echo(f"{path}: {top} {p:.3f}, malignancy {mal:.3f} -> {png}"
                   + (f" [{OUTSIDE}: predict gives it no class and no referral]" if outside else ""))
    for _, reason in errors:
        typer.secho(f"failed: {reason}", fg="red", err=True)
    if errors:
        raise typer.Exit(1)


@data_app.command("summary")
@friendly_errors
def data_summary(
    data_root: Path | None = DATA_ROOT_OPT,
    data_format: str | None = FORMAT_OPT,
    config: Path | None = CONFIG_OPT,
    splits: Path | None = typer.Option(None, help="A splits.csv to use instead of making the split."),
    overrides: list[str] | None = SET_OPT,
):
    """Images, lesions and class counts per split; checks that no lesion is in two splits."""
    from lesion_pl.config import load_config
    from lesion_pl.data.splits import split_summary
    from lesion_pl.terminal import format_data_summary

    sets = list(overrides or []) + ([f"data.root={data_root}"] if data_root else [])
    sets += [f"data.format={data_format}"] if data_format else []
    cfg = load_config(config, sets)
    typer.echo(format_data_summary(split_summary(cfg.data, cfg.seed, splits)))


@data_app.command("download")
@friendly_errors
def data_download(
    dataset: str = typer.Argument(..., help="ham10000 or dermamnist."),
    to: Path = typer.Option(Path("data"), "--to", help="Folder to put the dataset in (as <to>/<dataset>/)."),
    size: int = typer.Option(28, help="dermamnist: image size, 28, 64, 128 or 224."),
    base_url: str | None = typer.Option(None, help="Fetch from this mirror instead of the official host."),
    quiet: bool = QUIET_OPT,
):
    """Download a public dataset (checksums verified, partial downloads resumed) so that `fit` finds it."""
    from lesion_pl.data.download import download_dermamnist, download_ham10000

    if dataset == "ham10000":
        where = download_ham10000(to, base_url, progress=not quiet)
    elif dataset == "dermamnist":
        where = download_dermamnist(to, size, base_url, progress=not quiet)
    else:
        raise LesionPLError(f"unknown dataset '{dataset}': ham10000 or dermamnist")
    typer.echo(f"{dataset} is in {where}; use it with --data-root {where}")


@data_app.command("check")
@friendly_errors
def data_check(
    data_root: Path | None = DATA_ROOT_OPT,
    data_format: str | None = FORMAT_OPT,
    out: Path = typer.Option(Path("bad_images.csv"), "--out", "-o", help="Where to write the list of bad files."),
    config: Path | None = CONFIG_OPT,
    overrides: list[str] | None = SET_OPT,
):
    """Open every image of a dataset in parallel; list the unreadable ones with the reason."""
    import pandas as pd

    from lesion_pl.config import load_config, resolve_data_root
    from lesion_pl.data.check import check_images
    from lesion_pl.data.sources import read_source
    from lesion_pl.io import atomic_path, require_writable, spreadsheet_safe

    require_writable(out, "--out")
    sets = list(overrides or []) + ([f"data.root={data_root}"] if data_root else [])
    sets += [f"data.format={data_format}"] if data_format else []
    cfg = load_config(config, sets)
    root = resolve_data_root(cfg.data)
    table = read_source(cfg.data.format, root, cfg.data)
    bad, flagged = check_images(table["path"].tolist())
    with atomic_path(out) as tmp:
        pd.DataFrame({"path": list(bad) + list(flagged), "kind": ["bad"] * len(bad) + ["warning"] * len(flagged),
                      "reason": list(bad.values()) + list(flagged.values())}).map(spreadsheet_safe).to_csv(
            tmp, index=False)
    typer.echo(f"{len(table)} images checked, {len(bad)} bad, {len(flagged)} readable but tiny or blank; "
               f"list written to {out}")
    for _, reason in list(bad.items())[:10]:
        typer.secho(f"  {reason}", fg="red", err=True)
    for path, why in list(flagged.items())[:10]:
        typer.secho(f"  warning: {path}: {why}", fg="yellow", err=True)
    if bad:
        raise typer.Exit(1)


def main() -> int:
    """The `lesion-pl` command."""
    return app()


if __name__ == "__main__":
    sys.exit(main())
