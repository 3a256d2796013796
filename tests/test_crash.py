"""kill -9 at an arbitrary moment, then resume: the same losses as an uninterrupted run, never a corrupt
checkpoint (DESIGN.md §5, issue 7)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from worldflow import ckpt
from worldflow.logger import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "tests/helpers/ddp_train.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def losses(path):
    return {r["step"]: r["loss"] for r in read_metrics(path / "metrics.jsonl")}


def start_long_run(run, rows, stderr):
    """The helper's long self-flow run in the background, returned once it has logged `rows` steps."""
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, str(run), "selfflow", "long"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    deadline = time.time() + 300
    while len(losses(run)) < rows and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    return proc


def resume_long_run(run):
    subprocess.run(
        [sys.executable, SCRIPT, str(run), "selfflow", "long", "resume"],
        env=ENV,
        check=True,
        capture_output=True,
        timeout=600,
    )


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


@pytest.mark.slow  # multi-process; run with -m slow
@pytest.mark.parametrize("kill_after_rows", [9, 23])
def test_kill9_then_resume_matches_uninterrupted(tmp_path, full, kill_after_rows):
    run = tmp_path / "killed"
    proc = start_long_run(run, rows=kill_after_rows, stderr=subprocess.DEVNULL)
    os.kill(proc.pid, signal.SIGKILL)  # at whatever it is doing: a step, a log line or a checkpoint write
    proc.wait()
    for c in ckpt.list_checkpoints(run / "checkpoints"):
        ckpt.load_checkpoint(c)  # every complete-looking checkpoint verifies
    resume_long_run(run)
    assert losses(run) == full  # every step's loss, before and after the kill, bit for bit


@pytest.mark.slow  # multi-process; run with -m slow
def test_ctrl_c_checkpoints_the_step_it_stops_at_and_resume_matches(tmp_path, full):
    """SIGINT (Ctrl-C, `timeout -s INT`) finishes the current step, checkpoints it and stops; nothing is lost."""
    run = tmp_path / "interrupted"
    proc = start_long_run(run, rows=10, stderr=subprocess.PIPE)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGINT  # the helper has no entry point: the interrupt is re-raised
    found = re.search(r"interrupted at step (\d+): checkpoint written", err.decode())
    assert found, err.decode()[-2000:]
    stopped = int(found.group(1))
    assert 10 <= stopped < 60 and max(losses(run)) == stopped
    assert ckpt.list_checkpoints(run / "checkpoints")[-1].name == f"step_{stopped:07d}"
    resume_long_run(run)
    assert losses(run) == full


def test_entry_point_turns_ctrl_c_into_status_130(capsys):
    from worldflow.config import entry_point

    @entry_point
    def interrupted(cfg):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        interrupted(None)
    assert stop.value.code == 130 and capsys.readouterr().err == "interrupted\n"


@pytest.mark.slow  # multi-process; run with -m slow
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


@pytest.mark.slow  # multi-process; run with -m slow
def test_collection_continues_after_kill9(tmp_path):
    """eval/collect.py killed with SIGKILL mid-run: the same command continues from the journaled shards and
    the dataset equals an uninterrupted collection's."""
    pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("mujoco")
    from envs.rlds_writer import read_rt1_episodes

    env = {**ENV, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}

    def cmd(out):
        return [
            sys.executable,
            str(ROOT / "eval/collect.py"),
            "task='google_robot_close_top_drawer,google_robot_open_top_drawer'",
            "episodes=3",
            f"out={out}",
            "image_size=48x60",
            "shard_size=1",
            "progress=false",
        ]

    subprocess.run(cmd(tmp_path / "full"), env=env, check=True, capture_output=True, timeout=300)
    journal = tmp_path / "killed" / "fractal20220817_data" / ".0.1.0.incomplete" / "journal.json"
    proc = subprocess.Popen(
        cmd(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(journal.read_text())["episodes"] >= 4:  # into the second task
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "fractal20220817_data" / "0.1.0").exists()  # nothing published early
    again = subprocess.run(
        cmd(tmp_path / "killed"), env=env, check=True, capture_output=True, text=True, timeout=300
    )
    assert "continuing an interrupted collection" in again.stdout
    full = list(read_rt1_episodes(tmp_path / "full" / "fractal20220817_data" / "0.1.0"))
    resumed = list(read_rt1_episodes(tmp_path / "killed" / "fractal20220817_data" / "0.1.0"))
    assert len(resumed) == len(full) == 6
    for a, b in zip(full, resumed):
        assert (
            a["observation"]["natural_language_instruction"]
            == b["observation"]["natural_language_instruction"]
        )
        np.testing.assert_array_equal(a["action"]["world_vector"], b["action"]["world_vector"])
