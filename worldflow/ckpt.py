"""Checkpoints (DESIGN.md §5): `model.safetensors` (model + trainable objective parts), `ema.safetensors`,
`state.pt` (optimizer, schedule, RNG; loaded with weights_only=True) and `meta.json` (config, sizes,
versions, step, sha256 of every file). Written to a temporary folder, fsynced and renamed, so a crash
never leaves a checkpoint that looks complete; hashes are verified on load.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from worldflow.errors import CheckpointError

FILES = ("model.safetensors", "ema.safetensors", "state.pt")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(
    ckpt_root: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    train_state: dict,
    meta: dict,
    keep: int = 2,
) -> Path:
    """Write `ckpt_root/step_XXXXXXX` atomically and keep only the newest `keep` checkpoints."""
    root = Path(ckpt_root)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp-step_{step:07d}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file(_contiguous(model_state), str(tmp / "model.safetensors"))
        save_file(_contiguous(ema_state), str(tmp / "ema.safetensors"))
        torch.save(train_state, tmp / "state.pt")
        meta = {**meta, "step": step, "sha256": {f: _sha256(tmp / f) for f in FILES}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        for f in (*FILES, "meta.json"):
            _fsync(tmp / f)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {final}: {e}") from e
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete checkpoints (those with meta.json), oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / "meta.json").is_file())


def resolve(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (-> its newest checkpoint)."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    found = list_checkpoints(path / "checkpoints")
    if not found:
        raise CheckpointError(
            f"no checkpoint at {path} (expected a checkpoint folder or a run folder with checkpoints/)"
        )
    return found[-1]


def read_meta(ckpt: str | Path) -> dict:
    ckpt = resolve(ckpt)
    try:
        return json.loads((ckpt / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {ckpt}: meta.json is unreadable: {e}") from e


def load_checkpoint(ckpt: str | Path, verify: bool = True, with_state: bool = True) -> dict:
    """Returns {"dir", "meta", "model", "ema", "state"}; raises CheckpointError on a missing or corrupt file."""
    ckpt = resolve(ckpt)
    meta = read_meta(ckpt)
    files = FILES if with_state else FILES[:2]
    for f in files:
        if not (ckpt / f).is_file():
            raise CheckpointError(f"checkpoint {ckpt} is missing {f}")
        if verify and meta.get("sha256", {}).get(f) != _sha256(ckpt / f):
            raise CheckpointError(f"checkpoint {ckpt}: {f} does not match its hash in meta.json (corrupt?)")
    try:
        out = {
            "dir": ckpt,
            "meta": meta,
            "model": load_file(ckpt / FILES[0]),
            "ema": load_file(ckpt / FILES[1]),
        }
        out["state"] = torch.load(ckpt / "state.pt", weights_only=True) if with_state else None
    except Exception as e:
        raise CheckpointError(f"checkpoint {ckpt} could not be read: {e}") from e
    return out


def load_weights(
    module: torch.nn.Module, state: dict, expected_missing: list[str], source: str, dropped: list[str] = ()
) -> list[str]:
    """Load `state` into `module`; keys the module has but the state lacks must match a pattern in
    `expected_missing` (fnmatch), keys of the state the module lacks must match one in `dropped`, and
    anything else (missing, unexpected, wrong shape) is a CheckpointError. Returns the allowed missing keys."""
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not any(fnmatch.fnmatch(k, p) for p in dropped)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    undeclared = [k for k in missing if not any(fnmatch.fnmatch(k, p) for p in expected_missing)]
    if undeclared or unexpected or wrong:
        raise CheckpointError(
            f"weights from {source} do not fit the model: missing (not declared expected) {undeclared}, "
            f"unexpected {unexpected}, wrong shapes {wrong}"
        )
    module.load_state_dict(state, strict=False)
    return missing


def from_checkpoint(path: str | Path, use_ema: bool = True, device: str | torch.device = "cpu"):
    """Rebuild the model of a checkpoint (or a run folder's newest) without Hydra -> (model in eval mode, meta)."""
    from worldflow.model.dit import DiT, ModelConfig

    loaded = load_checkpoint(path, with_state=False)
    meta = loaded["meta"]
    try:
        # checkpoints written before model.prediction existed predicted the velocity
        model = DiT(ModelConfig(**{"prediction": "v", **meta["model"]}))
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {loaded['dir']}: meta.json has no usable model config: {e}") from e
    state = (
        loaded["ema"]
        if use_ema
        else {k: v for k, v in loaded["model"].items() if not k.startswith("objective.")}
    )
    load_weights(model, state, [], str(loaded["dir"]))
    return model.to(device).eval(), meta
