"""Long real-data runs (pytest -m slow): the whole pipeline on the full HAM10000."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from .conftest import invoke

pytestmark = pytest.mark.slow


def test_full_dataset_fit_test_export(ham_root, tmp_path):
    out = tmp_path / "full"
    r = invoke("fit", "--data-root", ham_root, "--out", out, "--max-epochs", 2,
               "--set", "trainer.limit_train_batches=60", "--set", "optim.warmup_epochs=0.2", "--quiet")
    assert r.exit_code == 0, r.output
    splits = pd.read_csv(out / "splits.csv")
    assert len(splits) == 10015 and (splits.groupby("group")["split"].nunique() == 1).all()
    r = invoke("test", "--run", out, "--quiet")
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert metrics["n_images"] == (splits["split"] == "test").sum()
    assert metrics["auroc_malignant"] > 0.6  # 120 steps already learn something real
    r = invoke("export", "--run", out, "--quiet")
    assert r.exit_code == 0 and "same top class on 64/64" in r.output, r.output
