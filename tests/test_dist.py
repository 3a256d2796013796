import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worldflow import ckpt
from worldflow.logger import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def run(args, tmp_path, nproc):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, str(ROOT / "tests/helpers/ddp_train.py"), *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            "--master_port=29533",
            str(ROOT / "tests/helpers/ddp_train.py"),
            *args,
        ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow  # multi-process; run with -m slow
@pytest.mark.parametrize("objective", ["selfflow"])
def test_two_processes_match_one_process(tmp_path, objective):
    """gloo, 2 ranks x 8 vs 1 rank x 16 (same global batch): the loss curves agree within noise — the
    ranks draw their own noise, so the curves are compared as averages, not step by step."""
    run([str(tmp_path / "one"), objective], tmp_path, 1)
    run([str(tmp_path / "two"), objective], tmp_path, 2)
    one = np.array([r["loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl")])
    two = np.array([r["loss"] for r in read_metrics(tmp_path / "two" / "metrics.jsonl")])
    assert len(one) == len(two) == 40
    assert two[-10:].mean() < 0.7 * two[:10].mean()  # the two-process run learns
    # the ranks draw their own noise, so single-batch losses differ by noise (0.3-0.8 over the last ten
    # steps of one run): compare the last twenty, as the same learning curve, within a quarter
    assert abs(two[-20:].mean() - one[-20:].mean()) < 0.25 * one[-20:].mean()
    assert abs(two[:5].mean() - one[:5].mean()) < 0.15 * one[:5].mean()
    # a checkpoint written by 2 ranks loads in one process with the plain model's keys
    loaded = ckpt.load_checkpoint(tmp_path / "two")
    assert not any(k.startswith("module.") for k in loaded["model"])


@pytest.mark.slow  # multi-process; run with -m slow
def test_accumulation_reduces_gradients_once_per_step_and_keeps_ranks_equal(tmp_path):
    """grad_accum=2 under DDP: the first micro-step runs in no_sync, the second reduces. The ranks draw
    different batches, so their weights agree after 40 steps only if every step's gradients were reduced."""
    run([str(tmp_path / "one"), "vanilla", "accum"], tmp_path, 1)
    run([str(tmp_path / "two"), "vanilla", "accum"], tmp_path, 2)
    sums = [float((tmp_path / "two" / f"params_rank{r}.txt").read_text()) for r in (0, 1)]
    assert sums[0] == sums[1]
    one = np.array([r["loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl")])
    two = np.array([r["loss"] for r in read_metrics(tmp_path / "two" / "metrics.jsonl")])
    assert len(one) == len(two) == 40 and two[-10:].mean() < 0.7 * two[:10].mean()
    # the ranks draw their own noise, so single-batch losses differ by noise (0.3-0.8 over the last ten
    # steps of one run): compare the last twenty, as the same learning curve, within a quarter
    assert abs(two[-20:].mean() - one[-20:].mean()) < 0.25 * one[-20:].mean()


@pytest.mark.slow  # multi-process; run with -m slow
def test_fsdp2_matches_one_process_and_resumes_at_any_world_size(tmp_path):
    """FSDP2 (train.parallel=fsdp), gloo, 2 ranks: same loss curve as one process within noise; its
    checkpoint holds full tensors under the plain keys and a single process resumes it."""
    run([str(tmp_path / "one"), "selfflow"], tmp_path, 1)
    run([str(tmp_path / "fsdp"), "selfflow", "fsdp"], tmp_path, 2)
    one = np.array([r["loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl")])
    two = np.array([r["loss"] for r in read_metrics(tmp_path / "fsdp" / "metrics.jsonl")])
    assert len(two) == 40
    assert two[-10:].mean() < 0.7 * two[:10].mean()
    # the ranks draw their own noise, so single-batch losses differ by noise (0.3-0.8 over the last ten
    # steps of one run): compare the last twenty, as the same learning curve, within a quarter
    assert abs(two[-20:].mean() - one[-20:].mean()) < 0.25 * one[-20:].mean()
    loaded = ckpt.load_checkpoint(tmp_path / "fsdp")
    plain = ckpt.load_checkpoint(tmp_path / "one")
    assert loaded["model"].keys() == plain["model"].keys()
    assert all(loaded["model"][k].shape == v.shape for k, v in plain["model"].items())
    adam = loaded["state"]["optimizer"]["state"]
    assert {tuple(s["exp_avg"].shape) for s in adam.values()} == {
        tuple(s["exp_avg"].shape) for s in plain["state"]["optimizer"]["state"].values()
    }
    run([str(tmp_path / "fsdp"), "selfflow", "resume", "long"], tmp_path, 1)
    rows = read_metrics(tmp_path / "fsdp" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 61))
    assert np.mean([r["loss"] for r in rows[40:]]) < 0.7 * two[:10].mean()
