"""Tracking: `fit` with TensorBoard and MLflow loggers against a real `mlflow server` started here on 127.0.0.1,
then test, export and report adding their figures and files to the same MLflow run, all read back through MLflow's
client and TensorBoard's event reader; and one line where the optional package is missing."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from .conftest import FAST, PROJECT, invoke


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    store = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    with open(store / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                                 "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                                 "--artifacts-destination", str(store / "artifacts"), "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"mlflow server did not start: {(store / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_run_logs_params_curves_figures_and_files_to_a_real_mlflow_server(small_ham, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "runs" / "tracked"
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 2, *FAST,
               "--set", "trainer.loggers=[csv, tensorboard, mlflow]", "--set", f"trainer.mlflow_uri={mlflow_server}",
               "--set", "trainer.mlflow_experiment=tracked-test")
    assert r.exit_code == 0, r.output
    for command in ("test", "export", "report"):
        r = invoke(command, "--run", out, "--quiet")
        assert r.exit_code == 0, (command, r.output)
    record = json.loads((out / "mlflow.json").read_text())
    assert record["tracking_uri"] == mlflow_server
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(record["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "tracked-test"
    params = run.data.params
    assert params["data.image_size"] == "48" and params["trainer.max_epochs"] == "2" and params["seed"] == "42"
    summary = json.loads((out / "summary.json").read_text())
    assert run.data.tags["code_revision"] == summary["code_revision"]

    log = pd.read_csv(out / "logs" / "metrics.csv")
    val = log.dropna(subset=["val/balanced_accuracy"])
    history = client.get_metric_history(record["run_id"], "val/balanced_accuracy")
    assert sorted(m.value for m in history) == pytest.approx(sorted(val["val/balanced_accuracy"]))
    assert len(history) == summary["epochs"] == 2

    metrics = json.loads((out / "test" / "metrics.json").read_text())
    for key in ("balanced_accuracy", "auroc_malignant"):
        assert run.data.metrics[f"test/{key}"] == pytest.approx(metrics[key])
    assert run.data.metrics["test/ood_pass"] == pytest.approx(metrics["ood"]["pass"])

    def names(path=None):
        return {a.path for a in client.list_artifacts(record["run_id"], path)}
    assert {"config.yaml", "splits.csv", "calibration.json", "MODEL_CARD.md"} <= names()
    assert {"test/metrics.json", "test/predictions.csv"} <= names("test")
    assert {"export/model.onnx", "export/MODEL_CARD.md"} <= names("export")
    assert "report/index.html" in names("report")

    r = invoke("test", "--run", out, "--split", "val", "--name", "val-again", "--quiet")  # another evaluation
    assert r.exit_code == 0, r.output
    again = json.loads((out / "evaluations" / "val-again" / "metrics.json").read_text())
    logged = client.get_run(record["run_id"]).data.metrics
    assert logged["evaluations/val-again/balanced_accuracy"] == pytest.approx(again["balanced_accuracy"])
    assert "evaluations/val-again/metrics.json" in names("evaluations/val-again")

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = [e.value for e in events.Scalars("val/balanced_accuracy")]
    assert scalars == pytest.approx(list(val["val/balanced_accuracy"]), abs=1e-6)


def test_an_ensemble_has_its_own_mlflow_run_with_its_members_nested(small_ham, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "runs" / "ensemble"
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, *FAST, "--set", "trainer.members=2",
               "--set", "trainer.loggers=[csv, mlflow]", "--set", f"trainer.mlflow_uri={mlflow_server}",
               "--set", "trainer.mlflow_experiment=ensemble-test")
    assert r.exit_code == 0, r.output
    r = invoke("test", "--run", out, "--quiet")
    assert r.exit_code == 0, r.output
    client = MlflowClient(tracking_uri=mlflow_server)
    ensemble = json.loads((out / "mlflow.json").read_text())["run_id"]
    members = [json.loads((out / "members" / str(i) / "mlflow.json").read_text())["run_id"] for i in (0, 1)]
    assert len({ensemble, *members}) == 3
    for member in members:  # each member's fit is its own run, nested under the ensemble's
        assert client.get_run(member).data.tags["mlflow.parentRunId"] == ensemble
    run = client.get_run(ensemble)
    assert run.data.params["trainer.members"] == "2" and run.data.tags["members"] == "2"
    assert run.info.status == "FINISHED"
    summary = json.loads((out / "summary.json").read_text())
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert run.data.metrics["val/balanced_accuracy"] == pytest.approx(summary["best_val_metrics"]["balanced_accuracy"])
    assert run.data.metrics["test/balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"])
    assert "test/metrics.json" in {a.path for a in client.list_artifacts(ensemble, "test")}


def test_an_optional_logger_that_is_not_installed_is_one_line(small_ham, tmp_path):
    code = ("import sys; sys.modules['mlflow'] = None\n"  # as if mlflow were not installed
            "from lesion_pl.cli import main; sys.exit(main())")
    proc = subprocess.run([sys.executable, "-c", code, "fit", "--data-root", str(small_ham), "--out",
                           str(tmp_path / "run"), "--max-epochs", "1", *map(str, FAST),
                           "--set", "trainer.loggers=[csv, mlflow]"], capture_output=True, text=True, cwd=PROJECT,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr[-1500:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "the package 'mlflow' is not installed: pip install mlflow" in lines[0]
