"""kill -9 at an arbitrary moment, then resume: the same losses as an uninterrupted run, never a corrupt
checkpoint (DESIGN.md §5, issue 7)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worldflow import ckpt
from worldflow.logger import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "tests/helpers/ddp_train.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def losses(path):
    return {r["step"]: r["loss"] for r in read_metrics(path / "metrics.jsonl")}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "run"
    subprocess.run(
        [sys.executable, SCRIPT, str(path), "selfflow", "long"],
        env=ENV,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return losses(path)


@pytest.mark.parametrize("kill_after_rows", [9, 23])
def test_kill9_then_resume_matches_uninterrupted(tmp_path, full, kill_after_rows):
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, str(run), "selfflow", "long"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while len(losses(run)) < kill_after_rows and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # at whatever it is doing: a step, a log line or a checkpoint write
    proc.wait()
    for c in ckpt.list_checkpoints(run / "checkpoints"):
        ckpt.load_checkpoint(c)  # every complete-looking checkpoint verifies
    subprocess.run(
        [sys.executable, SCRIPT, str(run), "selfflow", "long", "resume"],
        env=ENV,
        check=True,
        capture_output=True,
        timeout=600,
    )
    resumed = losses(run)
    assert resumed == full  # every step's loss, before and after the kill, bit for bit


def test_partial_checkpoint_folder_is_ignored(tmp_path):
    subprocess.run(
        [sys.executable, SCRIPT, str(tmp_path / "r"), "vanilla"],
        env=ENV,
        check=True,
        capture_output=True,
        timeout=600,
    )
    root = tmp_path / "r" / "checkpoints"
    (root / ".tmp-step_0000099").mkdir()
    (root / ".tmp-step_0000099" / "model.safetensors").write_bytes(b"half")
    assert [c.name for c in ckpt.list_checkpoints(root)] == ["step_0000020", "step_0000040"]
    assert ckpt.resolve(tmp_path / "r").name == "step_0000040"
