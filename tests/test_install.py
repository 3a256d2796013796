"""The wheel a user gets from `pip install .` (not the editable install): it holds every package and every
Hydra config, and the main job runs from it in a folder outside the repository."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ("worldflow", "envs", "policies", "eval", "configs")


def build_wheel(out: Path) -> Path:
    # from a copy of the tree: a stale build/ folder in the checkout would hide a package left out
    src = out / "src"
    top = {
        ".git",
        ".venv",
        "build",
        "runs",
        "data",
        "outputs",
    }  # only at the top: worldflow/data is a package

    def junk(folder: str, names: list[str]) -> set[str]:
        drop = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        return drop | (top & set(names) if Path(folder) == ROOT else drop)

    shutil.copytree(ROOT, src, ignore=junk)
    # --no-build-isolation: the venv's setuptools builds it, no index needed
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = out.glob("worldflow-*.whl")
    return wheel


def source_files() -> set[str]:
    tracked = subprocess.run(
        ["git", "ls-files", *TOP], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return {f for f in tracked if f.endswith((".py", ".yaml"))}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_holds_every_module_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(source_files() - names)
    assert not missing, f"left out of the wheel: {missing}"
    assert "configs/finetune.yaml" in names and "worldflow/worldmodel/__init__.py" in names


@pytest.mark.slow
def test_main_job_runs_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    work = tmp_path / "work"  # outside the repository: nothing can come from the checkout
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}

    def run(*args):
        return subprocess.run(
            [sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=900
        )

    where = run(
        "-c", "import worldflow, worldflow.config as c; print(worldflow.__file__); print(c.CONFIG_DIR)"
    )
    assert where.returncode == 0, where.stderr[-2000:]
    module, config_dir = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(config_dir).is_relative_to(site)

    ft = run(
        "-m",
        "worldflow.finetune",
        "robot=rt1",
        "debug=cpu",
        "run_dir=runs/main",
        "robot.embedded.episodes_per_task=1",
        "train.steps=2",
        "openloop.windows=1",
        "openloop.steps=2",
    )
    assert ft.returncode == 0, ft.stderr[-3000:]
    assert (work / "data" / "rt1_embedded").is_dir() and (work / "runs" / "main").is_dir()
    ev = run(
        "-m", "eval.simpler_rollout", "policy.checkpoint=runs/main", "episodes=1", "out_dir=runs/main/eval"
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "success" in (work / "runs" / "main" / "eval" / "summary.md").read_text().lower()
