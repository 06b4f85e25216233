"""Nothing lost, nothing half-written: one command per run folder (a lock), no folder left by a fit that
fails its checks, a resume that cannot read its checkpoint touches nothing, and a log that survives kill -9
during training, a resume, another kill -9 and a second resume with every epoch once and time that runs on."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from lesion_pl.errors import LesionPLError
from lesion_pl.run import RunDir

from .conftest import FAST, PROJECT, invoke

SLOW_EPOCHS = ["--set", "data.batch_size=4", "--set", "trainer.limit_train_batches=1.0",
               "--set", "calibration.tta=false", "--set", "calibration.bootstrap=10"]


def _fit_process(data_root, out, *extra):
    fast = [a for a in FAST if a != "--quiet"]
    return subprocess.Popen([sys.executable, str(PROJECT / "cli.py"), "fit", "--data-root", str(data_root),
                             "--out", str(out), "--quiet", *fast, *map(str, extra)],
                            cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, timeout=240.0):
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _validated(out) -> list[int]:
    try:
        log = pd.read_csv(out / "logs" / "metrics.csv")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return []
    if "val/balanced_accuracy" not in log:
        return []
    return log.loc[log["val/balanced_accuracy"].notna(), "epoch"].astype(int).tolist()


def test_a_second_command_on_a_busy_run_folder_is_refused(small_ham, tmp_path):
    out = tmp_path / "busy"
    first = _fit_process(small_ham, out, "--max-epochs", 4, *SLOW_EPOCHS)
    _wait_for(lambda: (out / ".lock").exists() and "pid" in (out / ".lock").read_text())
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, *FAST)
    assert r.exit_code == 2, r.output
    assert f"run folder {out} is in use by lesion-pl fit (pid {first.pid})" in r.output
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output  # the first run is whole: its own config, checkpoints, log, summary
    assert (out / "summary.json").is_file() and _validated(out) == [0, 1, 2, 3]
    assert not (out / ".lock").exists()
    r = invoke("test", "--run", out, "--quiet")  # free again
    assert r.exit_code == 0, r.output


def test_the_lock_refuses_in_process_too(tmp_path):
    with RunDir(tmp_path / "r").lock("report", create=True), \
            pytest.raises(LesionPLError, match="is in use by lesion-pl report"), RunDir(tmp_path / "r").lock("test"):
        pass
    assert not (tmp_path / "r").exists()  # made by the lock, left empty: removed


@pytest.mark.parametrize("bad", ["model.name=no_such_net", "trainer.max_time=soon", "model.weights=/nonexistent.pth"])
def test_a_fit_that_fails_its_checks_writes_nothing(small_ham, tmp_path, bad):
    out = tmp_path / "failed"
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, *FAST, "--set", bad)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert not out.exists()  # no config.yaml or splits.csv to block a corrected fit
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, *FAST)
    assert r.exit_code == 0, r.output


def test_resume_from_an_unreadable_checkpoint_touches_nothing(small_ham, tmp_path):
    out = tmp_path / "unreadable"
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, *FAST)
    assert r.exit_code == 0, r.output
    log = (out / "logs" / "metrics.csv").read_bytes()
    (out / "checkpoints" / "last.ckpt").write_text("101")
    r = invoke("fit", "--out", out, "--resume", "--max-epochs", 2, "--quiet")
    last = out / "checkpoints" / "last.ckpt"
    assert r.exit_code == 2, r.output
    assert f"cannot read the checkpoint to resume from, {last}: not a PyTorch checkpoint" in r.output, r.output
    assert (out / "logs" / "metrics.csv").read_bytes() == log
    assert not (out / "logs" / "metrics.before-resume.csv").exists()


def test_kill_resume_kill_resume_keeps_every_epoch_once(small_ham, tmp_path):
    out = tmp_path / "killed"
    epochs = ["--max-epochs", 7, *SLOW_EPOCHS]
    proc = _fit_process(small_ham, out, *epochs)
    _wait_for(lambda: len(_validated(out)) >= 2 and (out / "checkpoints" / "last.ckpt").exists())
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _validated(out)
    assert 2 <= len(first) < 7

    proc = subprocess.Popen([sys.executable, str(PROJECT / "cli.py"), "fit", "--out", str(out), "--resume",
                             *map(str, epochs), "--quiet"], cwd=PROJECT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    backup = out / "logs" / "metrics.before-resume.csv"
    _wait_for(lambda: backup.exists() and len(_validated(out)) >= 1)  # the resumed run has validated an epoch
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    proc = subprocess.run([sys.executable, str(PROJECT / "cli.py"), "fit", "--out", str(out), "--resume",
                           *map(str, epochs), "--quiet"], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = pd.read_csv(out / "logs" / "metrics.csv")
    val = log[log["val/balanced_accuracy"].notna()]
    assert val["epoch"].astype(int).tolist() == list(range(7))  # every epoch, once, in order
    elapsed = val["time/elapsed_s"].to_numpy()
    assert (elapsed[1:] > elapsed[:-1]).all()  # time runs on across both resumes
    assert not backup.exists()
    summary = pd.read_json(out / "summary.json", typ="series")
    assert summary["epochs"] == 7 and summary["fit_seconds"] >= elapsed[len(first) - 1] * 0.5
