"""Lightning DDP on 2 CPU processes (gloo): fit runs, and the validation metrics the processes
computed together equal a one-process evaluation of the same checkpoint (in the default suite: about 40 s)."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from .conftest import FAST, PROJECT


def test_fit_on_two_processes_matches_one_process_evaluation(small_ham, tmp_path):
    from lesion_pl.checkpoint import load_classifier
    from lesion_pl.evaluate.inference import predict_logits
    from lesion_pl.evaluate.metrics import metric_collection
    from lesion_pl.run import RunDir

    out = tmp_path / "ddp"
    cmd = [sys.executable, str(PROJECT / "cli.py"), "fit", "--data-root", str(small_ham), "--out", str(out),
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--max-epochs", "1", *FAST,
           # fp32, as the one-process evaluation below: on a CPU with bf16 "auto" validates in bf16
           "--set", "trainer.precision=32-true"]
    r = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("best val balanced accuracy") == 1  # only the first process reports

    log = pd.read_csv(out / "logs" / "metrics.csv")
    logged = log[log["val/balanced_accuracy"].notna()].iloc[-1]

    run = RunDir(out)
    dm = run.datamodule(run.load_config(), progress=False)
    ds = dm.dataset("val")
    probs = torch.from_numpy(predict_logits(load_classifier(run.best), ds, progress=False)).softmax(1)
    metrics = metric_collection(per_class=True)
    metrics.update(probs, torch.tensor(ds.labels))
    single = {k: float(v) for k, v in metrics.compute().items()}
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "auroc_macro", "auroc_malignant"):
        assert logged[f"val/{key}"] == pytest.approx(single[key], abs=1e-6), key
