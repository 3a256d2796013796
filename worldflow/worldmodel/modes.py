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

from worldflow.data.actions import ACTION_DIM
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
    proprio: bool = False  # condition on the current proprioception (standardised), after the instruction
    terminate: bool = False  # one more action channel, last: +1 on the step that ends the (sub)task, else -1
    # future frames predicted as the last context frame plus a learned change (model.residual_from)
    residual: bool = True
    # env steps between consecutive frames of a window (context and future): with a gap of g and a horizon
    # of h the future frames are t + g, ..., t + h*g; g * h = action_horizon spans the action chunk
    frame_gap: int = 1
    # probability that a training sample's earlier context frames are replaced by its last one (as at an
    # episode's start), so that the motion must be read from the actions, not extrapolated from the context
    context_dropout: float = 0.0

    def validate(self) -> None:
        unknown = set(self.mode_weights) - set(MODES)
        if unknown:
            raise ConfigError(
                f"unknown world-model mode(s) {sorted(unknown)} in mode_weights; modes: {list(MODES)}"
            )
        if sum(self.mode_weights.values()) <= 0:
            raise ConfigError("worldmodel.mode_weights must have a positive weight")
        if self.frame_gap < 1:
            raise ConfigError(
                f"worldmodel.frame_gap={self.frame_gap}: must be >= 1 (env steps between frames)"
            )
        if not 0.0 <= self.context_dropout <= 1.0:
            raise ConfigError(f"worldmodel.context_dropout={self.context_dropout}: must be in [0, 1]")

    def model_config(
        self,
        base: ModelConfig,
        image_size: int,
        cond_dim: int,
        proprio_dim: int = 0,
        robot_action_dim: int = ACTION_DIM,
    ) -> ModelConfig:
        """`base` (size, patch, tubelet, options) with the world model's token groups filled in (§2): RGB
        frames (context + horizon), a condition vector = instruction (`cond_dim`) ‖ proprioception
        (`proprio_dim`, when `proprio`), `action_horizon` action tokens of the robot's action size
        (`robot.data.action_dims`, as the episode cache holds it) plus the terminate channel if on."""
        if self.proprio and proprio_dim <= 0:
            raise ConfigError(
                "worldmodel.proprio=true but the dataset has no proprioception (robot.data.proprio_keys)"
            )
        if base.keypoints and base.tubelet > self.context:
            raise ConfigError(
                f"model.keypoints reads the first tubelet, which must be context: model.tubelet={base.tubelet} "
                f"> worldmodel.context={self.context}"
            )
        return replace(
            base,
            channels=3,
            image_size=image_size,
            frames=self.context + self.horizon,
            num_classes=0,
            cond_dim=cond_dim + (proprio_dim if self.proprio else 0),
            action_dim=robot_action_dim + int(self.terminate),
            action_horizon=self.action_horizon,
            residual_from=self.context if self.residual else 0,
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

    def __init__(self, cfg: WorldModelConfig, inner: nn.Module, proprio_dim: int = 0):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.proprio_dim = proprio_dim if cfg.proprio else 0  # the condition's tail that dropout keeps
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
        x = batch["x"]
        if self.cfg.context_dropout > 0 and self.cfg.context > 1:
            drop = torch.rand(b, device=dev) < self.cfg.context_dropout
            last = self.cfg.context - 1
            x = x.clone()
            x[drop, :last] = x[drop, last : last + 1]
        cond = batch["cond"]
        if self.cfg.cond_dropout > 0:
            keep = (torch.rand(b, device=dev) >= self.cfg.cond_dropout).to(cond.dtype)
            mask = torch.ones_like(cond) * keep[:, None]
            if self.proprio_dim:
                mask[:, -self.proprio_dim :] = 1.0  # only the instruction is dropped (CFG on language)
            cond = cond * mask
        inner_batch = {
            "x": x,
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
