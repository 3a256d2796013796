"""The harness side of the env-worker protocol (eval/worker.py): start a worker process with a Python the
user names, send requests, and turn a crash or a hang into a clear exception."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from eval.worker import decode_array
from worldflow.errors import ConfigError

WORKER = Path(__file__).resolve().parent / "worker.py"


class WorkerError(RuntimeError):
    """The worker died or hung; the episode in flight is failed with this reason."""


class EnvRequestError(RuntimeError):
    """The worker is alive but the env raised (reported by the worker)."""


def task_timeouts(timeout: float | Mapping, task: str | None = None) -> dict[str, float]:
    """The worker's timeouts for one task, by command: {"default": s, "make": s, "reset": s} from a number
    (every request) or from {"default", "make", "reset", ..., "tasks": {pattern: {...}}}, where the first
    fnmatch pattern that matches the task overrides what it names (SimplerEnv ray traces the drawer scenes:
    minutes a step). The one reader of the `timeout` setting; `default` covers the commands not named."""
    if not isinstance(timeout, Mapping):
        return {"default": float(timeout)}
    out = {k: float(v) for k, v in timeout.items() if k != "tasks" and v is not None}
    if "default" not in out:
        raise ConfigError(f"timeout={dict(timeout)}: needs a default (seconds for the commands not named)")
    for pattern, override in (timeout.get("tasks") or {}).items() if task is not None else ():
        if fnmatch.fnmatchcase(task, pattern):
            out.update({k: float(v) for k, v in override.items()})
            break
    return out


class EnvClient:
    """timeout: seconds the worker may take to answer a request before it is killed, one number for every
    request or {"default": s, "make": s, "reset": s, ..., "tasks": {pattern: {...}}} (`task_timeouts`);
    the per-task overrides apply from `use_task_timeouts(task)` on."""

    def __init__(
        self,
        suite: str = "cpu",
        python: str | None = None,
        timeout: float | Mapping[str, float] = 120.0,
        worker: str | Path = WORKER,
    ):
        self.suite, self.python, self.worker = suite, python or sys.executable, str(worker)
        self.timeout_setting = timeout
        self.timeouts = task_timeouts(timeout)
        self.proc: subprocess.Popen | None = None
        self.task = self.kwargs = None
        self.aborted = False

    def use_task_timeouts(self, task: str) -> None:
        self.timeouts = task_timeouts(self.timeout_setting, task)

    def start(self) -> None:
        if not Path(self.python).exists() and os.sep in self.python:
            raise WorkerError(f"worker python {self.python} does not exist")
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the worker
        self.proc = subprocess.Popen(
            [self.python, self.worker, "--suite", self.suite],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            bufsize=1,
        )

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read().strip().splitlines()
        return " | ".join(lines[-3:])

    def request(self, msg: dict, timeout: float | None = None) -> dict:
        if self.aborted:
            raise WorkerError(f"worker_aborted: {msg['cmd']!r} not sent, the run is stopping")
        timeout = timeout or self.timeouts.get(msg["cmd"], self.timeouts["default"])
        if self.proc is None or self.proc.poll() is not None:
            self.restart()
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            self.kill()
            raise WorkerError(
                f"worker_crash: could not send {msg['cmd']!r} ({e}); stderr: {self._stderr_tail()}"
            ) from e
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.kill()
            raise WorkerError(f"worker_timeout: no answer to {msg['cmd']!r} within {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=5)
            tail = self._stderr_tail()
            self.proc = None
            raise WorkerError(
                f"worker_crash: worker exited with code {code} during {msg['cmd']!r}; stderr: {tail}"
            )
        res = json.loads(line)
        if not res.get("ok"):
            raise EnvRequestError(res.get("error", "unknown worker error"))
        return res

    def restart(self) -> None:
        self.kill()
        self.start()
        if self.task is not None:
            self.make(self.task, self.kwargs)

    def abort(self) -> None:
        """From another thread: kill the worker and refuse every later request, so that the thread using
        this client gets a WorkerError at once instead of finishing its episode (the run is stopping)."""
        self.aborted = True
        proc = self.proc
        if proc is not None:
            proc.kill()  # the owner's select sees EOF; it reaps the process itself

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(WorkerError, EnvRequestError):
                self.request({"cmd": "close"}, timeout=10)
        self.kill()

    # ----- env API ------------------------------------------------------------------------------------
    def make(self, task: str, kwargs: dict | None = None) -> int:
        self.task = None  # a worker (re)started for this request makes nothing else first
        max_steps = int(self.request({"cmd": "make", "task": task, "kwargs": kwargs or {}})["max_steps"])
        self.task, self.kwargs = task, kwargs or {}  # what a restarted worker makes again
        return max_steps

    def reset(self, seed: int) -> tuple[dict, str]:
        res = self.request({"cmd": "reset", "seed": int(seed)})
        return _obs(res["obs"]), res["instruction"]

    def step(self, action: np.ndarray) -> dict:
        res = self.request({"cmd": "step", "action": np.asarray(action, np.float64).tolist()})
        res["obs"] = _obs(res["obs"])
        return res

    def instruction(self) -> str:
        return self.request({"cmd": "instruction"})["instruction"]

    def is_final_subtask(self) -> bool:
        return bool(self.request({"cmd": "is_final_subtask"})["value"])

    def advance(self) -> None:
        self.request({"cmd": "advance"})

    def expert(self) -> tuple[np.ndarray, bool]:
        res = self.request({"cmd": "expert"})
        return np.asarray(res["action"], np.float32), bool(res["terminate"])


def _obs(d: dict) -> dict:
    return {k: decode_array(v) for k, v in d.items()}
