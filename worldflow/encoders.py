"""Small frozen image encoders loaded from local files: REPA's target and the domain-FD feature net.

A file is a safetensors state dict whose metadata names the architecture and its sizes, so loading one
never executes code from the file. REPA proper uses DINOv2; a user who has such weights converts them to
an architecture registered here. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from worldflow.errors import CheckpointError


class ConvEncoder(nn.Module):
    """A small CNN: images (B, C, H, W) in [-1, 1] -> feature map (B, dim, H/2^downs, W/2^downs)."""

    def __init__(self, channels: int = 3, width: int = 64, dim: int = 128, downs: int = 3):
        super().__init__()
        self.arch = {"arch": "conv", "channels": channels, "width": width, "dim": dim, "downs": downs}
        layers, c = [], channels
        for i in range(downs):
            w = width * 2**i
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.GroupNorm(8, w), nn.SiLU()]
            c = w
        layers += [nn.Conv2d(c, dim, 1)]
        self.net = nn.Sequential(*layers)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


ARCHS = {"conv": ConvEncoder}


def save_encoder(encoder: ConvEncoder, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(
        {k: v.contiguous() for k, v in encoder.state_dict().items()},
        str(tmp),
        metadata={"arch": json.dumps(encoder.arch)},
    )
    tmp.replace(path)
    return path


def load_encoder(path: str | Path) -> nn.Module:
    """Load a frozen encoder (eval mode, no gradients) from a safetensors file written by `save_encoder`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"encoder file {path} does not exist (encoders are local files; nothing is downloaded)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("arch", "null"))
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except Exception as e:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"encoder file {path} is not a readable safetensors file: {e}") from e
    if not meta or meta.get("arch") not in ARCHS:
        raise CheckpointError(
            f"encoder file {path} names no known architecture (metadata 'arch': {meta}); known: {list(ARCHS)}"
        )
    kwargs = {k: v for k, v in meta.items() if k != "arch"}
    enc = ARCHS[meta["arch"]](**kwargs)
    try:
        enc.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"encoder file {path} does not match its declared architecture: {e}") from e
    return enc.eval().requires_grad_(False)
