"""Bad inputs at the entry points: one clear error naming the input, a non-zero exit, nothing written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300
    )


TINY = [
    "debug=cpu",
    "train.steps=2",
    "train.log_every=1",
    "data.num_samples=64",
    "sample.num=2",
    "sample.steps=2",
]


@pytest.mark.parametrize(
    "args,message",
    [
        (["train.stpes=10"], "train.stpes"),  # misspelt key (Hydra refuses it by name)
        (["objective.gama=0.8"], "objective.gama"),
        (["model=XXL"], "model"),  # unknown config group option
        (["data=image_folder", "data.root=/nonexistent/images"], "/nonexistent/images"),
        (["data=video_folder", "data.root=/nonexistent/videos"], "/nonexistent/videos"),
        (
            ["objective=repa", "objective.encoder=/nonexistent/enc.safetensors"],
            "/nonexistent/enc.safetensors",
        ),
        (["train.precision=fp16"], "train.precision"),
        (["train.parallel=zero3"], "train.parallel"),
        (["init_from=/nonexistent/run"], "/nonexistent/run"),
    ],
)
def test_pretrain_bad_inputs(tmp_path, args, message):
    run_dir = tmp_path / "run"
    proc = cli("-m", "worldflow.pretrain", *TINY, f"run_dir={run_dir}", *args, cwd=tmp_path)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert message in err, err[-2000:]
    assert "Traceback" not in proc.stderr or "Hydra" in proc.stderr  # user mistakes are not crashes
    assert not (run_dir / "checkpoints").exists()


def test_pretrain_wrong_image_shape_names_the_file(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs" / "cats"
    root.mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(root / "a.png")
    Image.new("RGB", (48, 48)).save(root / "odd.png")
    proc = cli(
        "-m",
        "worldflow.pretrain",
        *TINY,
        "data=image_folder",
        f"data.root={tmp_path / 'imgs'}",
        "data.resize=false",
        "image_size=40",
        f"run_dir={tmp_path / 'run'}",
        "model.patch=4",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "odd.png" in proc.stderr, proc.stderr[-2000:]


def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = cli("-m", "worldflow.pretrain", *TINY, f"run_dir={blocker / 'run'}", cwd=tmp_path)
    assert proc.returncode != 0
    assert str(blocker) in proc.stderr, proc.stderr[-2000:]
    assert blocker.read_text() == "not a folder"


def test_sample_bad_checkpoint(tmp_path):
    proc = cli("-m", "worldflow.sample", f"ckpt={tmp_path / 'nothing'}", cwd=tmp_path)
    assert proc.returncode == 2 and "no checkpoint at" in proc.stderr


def test_pretrain_then_sample_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("-m", "worldflow.pretrain", *TINY, "data=synthetic_images", f"run_dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "samples" / "step_0000002.png").is_file()
    again = cli(
        "-m", "worldflow.pretrain", *TINY, "data=synthetic_images", f"run_dir={run_dir}", cwd=tmp_path
    )
    assert again.returncode == 2 and "already has checkpoints" in again.stderr
    out = tmp_path / "grid.png"
    proc = cli("-m", "worldflow.sample", f"ckpt={run_dir}", "num=4", "steps=2", f"out={out}", cwd=tmp_path)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
    proc = cli("-m", "worldflow.sample", f"ckpt={run_dir}", "num=4", "steps=2", "labels=[99]", cwd=tmp_path)
    assert proc.returncode == 2 and "labels=[99]" in proc.stderr
    proc = cli("-m", "worldflow.sample", f"ckpt={run_dir}", "num=4", "steps=2", "fd=65", cwd=tmp_path)
    assert proc.returncode == 2 and "fd=65" in proc.stderr and "only 64 items" in proc.stderr
    assert not (tmp_path / "runs" / "fd_cache").exists()  # nothing trained or written
    proc = cli("-m", "worldflow.sample", f"ckpt={run_dir}", "num=8", "steps=2", "fd=64", f"out={out}",
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "grid.fd.json").read_text())
    assert report["samples"] == 8 and report["real"] == 64 and report["step"] == 2
    assert report["fd"] > 0 and f"domain FD {report['fd']:.3f}" in proc.stdout
    assert report["fd_data"] is None  # all 64 items are the reference: no other data to score
    assert len(list((tmp_path / "runs" / "fd_cache").glob("domain_encoder-*.safetensors"))) == 1
