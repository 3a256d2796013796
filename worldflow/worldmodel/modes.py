"""Token layout and modes of the world model (DESIGN.md §2).

| mode    | context frames | future frames       | actions  |
|---------|----------------|---------------------|----------|
| policy  | clean          | absent (t = 1)      | denoised |
| forward | clean          | denoised            | clean    |
| inverse | clean          | clean               | denoised |
| joint   | clean          | denoised            | denoised |
| video   | clean          | denoised            | absent   |

Training draws a mode per sample from a configurable mixture and hands the objective per-token
`clean` / `absent` / `loss_mask` masks (worldflow.objectives.common); the same objective (vanilla or
Self-Flow) then trains every mode. In the joint mode frames and actions share the sample's timestep(s).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from worldflow.errors import ConfigError
from worldflow.model.dit import ModelConfig

MODES = ("policy", "forward", "inverse", "joint", "video")
# (future frames, actions): "clean" | "noised" | "absent"
LAYOUT = {
    "policy": ("absent", "noised"),
    "forward": ("noised", "clean"),
    "inverse": ("clean", "noised"),
    "joint": ("noised", "noised"),
    "video": ("noised", "absent"),
}


@dataclass
class WorldModelConfig:
    context: int = 2  # context frames (always clean)
    horizon: int = 4  # future frames
    action_horizon: int = 8  # action tokens
    mode_weights: dict[str, float] = field(
        default_factory=lambda: {"policy": 1.0, "forward": 1.0, "inverse": 1.0, "joint": 1.0, "video": 0.0}
    )
    cond_dropout: float = 0.1  # instruction embedding zeroed with this probability (for CFG)

    def validate(self) -> None:
        unknown = set(self.mode_weights) - set(MODES)
        if unknown:
            raise ConfigError(
                f"unknown world-model mode(s) {sorted(unknown)} in mode_weights; modes: {list(MODES)}"
            )
        if sum(self.mode_weights.values()) <= 0:
            raise ConfigError("worldmodel.mode_weights must have a positive weight")

    def model_config(self, base: ModelConfig, image_size: int, cond_dim: int) -> ModelConfig:
        """`base` (size, patch, tubelet, options) with the world model's token groups filled in (§2): RGB
        frames (context + horizon), an instruction vector of `cond_dim`, `action_horizon` 7-d action tokens."""
        return replace(
            base,
            channels=3,
            image_size=image_size,
            frames=self.context + self.horizon,
            num_classes=0,
            cond_dim=cond_dim,
            action_dim=7,
            action_horizon=self.action_horizon,
        )


def frame_of_token(model) -> torch.Tensor:
    """(N_frames,) the first frame index each frame token covers (tokens are in (t, h, w) order)."""
    cfg = model.cfg
    per_slot = (cfg.image_size // cfg.patch) ** 2
    n = model.groups["frames"][0]
    return (torch.arange(n) // per_slot) * cfg.tubelet


def layout_masks(model, context: int, modes: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, absent), each (B, N) bool, for one mode per sample."""
    frame = frame_of_token(model).to(device)
    is_future = frame >= context
    n_actions = model.groups["actions"][0] if "actions" in model.groups else 0
    clean, absent = [], []
    for mode in modes:
        fut, act = LAYOUT[mode]
        c_f = ~is_future | (is_future & (fut == "clean"))
        a_f = is_future & (fut == "absent")
        c_a = torch.full((n_actions,), act == "clean", device=device)
        a_a = torch.full((n_actions,), act == "absent", device=device)
        clean.append(torch.cat([c_f, c_a]))
        absent.append(torch.cat([a_f, a_a]))
    return torch.stack(clean), torch.stack(absent)


def validity_mask(model, frame_valid: torch.Tensor, action_valid: torch.Tensor) -> torch.Tensor:
    """(B, N) float: 1 for tokens of real (not padded) frames and actions."""
    cfg = model.cfg
    frame = frame_of_token(model).to(frame_valid.device)
    slots = frame_valid.view(frame_valid.shape[0], -1, cfg.tubelet).all(-1)  # (B, T / tubelet)
    tok = slots[:, frame // cfg.tubelet]
    return torch.cat([tok, action_valid], dim=1).float()


class WorldModelObjective(nn.Module):
    """Wraps a flow objective: draws a mode per sample, sets the token layout, then calls the objective."""

    def __init__(self, cfg: WorldModelConfig, inner: nn.Module):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.inner = inner
        self.modes = [m for m in MODES if cfg.mode_weights.get(m, 0) > 0]
        self.register_buffer(
            "weights", torch.tensor([cfg.mode_weights[m] for m in self.modes]), persistent=False
        )

    @property
    def needs_teacher(self) -> bool:
        return getattr(self.inner, "needs_teacher", False)

    def forward(self, model, teacher, batch):
        b = batch["x"].shape[0]
        dev = batch["x"].device
        idx = torch.multinomial(self.weights.float(), b, replacement=True)
        modes = [self.modes[i] for i in idx.tolist()]
        clean, absent = layout_masks(getattr(model, "_orig_mod", model), self.cfg.context, modes, dev)
        cond = batch["cond"]
        if self.cfg.cond_dropout > 0:
            keep = (torch.rand(b, device=dev) >= self.cfg.cond_dropout).to(cond.dtype)
            cond = cond * keep[:, None]
        inner_batch = {
            "x": batch["x"],
            "actions": batch["actions"],
            "cond": cond,
            "clean": clean,
            "absent": absent,
            "loss_mask": validity_mask(
                getattr(model, "_orig_mod", model), batch["frame_valid"], batch["action_valid"]
            ),
        }
        loss, metrics = self.inner(model, teacher, inner_batch)
        for m in self.modes:
            metrics[f"frac_{m}"] = modes.count(m) / b
        return loss, metrics
