"""REPA (Yu et al. 2025, sihyun-yu/REPA `loss.py`): align the student's block-l tokens, through an MLP
projector, with a frozen external encoder's patch features of the clean image; L = L_flow + lambda·L_rep.
The baseline Self-Flow claims to beat without an external encoder (DESIGN.md §6)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from worldflow import flow
from worldflow.encoders import load_encoder
from worldflow.errors import ConfigError
from worldflow.model.sizes import default_blocks
from worldflow.objectives.common import fix_layout, flow_loss, noised, prepare, sample_per_token


@dataclass
class RepaConfig:
    name: str = "repa"
    encoder: str = ""  # path to a safetensors encoder (worldflow.encoders); required
    timesteps: flow.TimestepSampler = field(default_factory=flow.TimestepSampler)
    label_dropout: float = 0.1
    group_weights: dict[str, float] = field(default_factory=lambda: {"frames": 1.0, "actions": 1.0})
    student_block: int = 0  # 1-indexed; 0 = round(0.3·depth) (REPA: 8 of 28)
    coeff: float = 0.5  # REPA's lambda
    projector_dim: int = 2048


class Repa(nn.Module):
    needs_teacher = False

    def __init__(self, cfg: RepaConfig, model):
        super().__init__()
        if not cfg.encoder:
            raise ConfigError("objective=repa needs objective.encoder=<path to a local encoder .safetensors>")
        self.cfg = cfg
        # Kept out of the state dict and the optimizer: the encoder is frozen and loaded from its file.
        object.__setattr__(self, "encoder", load_encoder(cfg.encoder))
        self.student_block = cfg.student_block or default_blocks(model.depth)[0]
        if not 1 <= self.student_block <= model.depth:
            raise ConfigError(f"objective.student_block={self.student_block} is outside 1..{model.depth}")
        d, h = model.hidden, cfg.projector_dim
        self.projector = nn.Sequential(
            nn.Linear(d, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, self.encoder.dim)
        )

    def target_features(self, model, x: torch.Tensor) -> torch.Tensor:
        """Encoder features of the clean frames, pooled to the model's token grid -> (B, N_frames, E)."""
        cfg = model.cfg
        frames = x if x.ndim == 5 else x[:, None]
        b, t = frames.shape[:2]
        self.encoder.to(x.device)
        with torch.no_grad():
            feats = self.encoder(rearrange(frames, "b t c h w -> (b t) c h w").float())
        grid = cfg.image_size // cfg.patch
        feats = F.adaptive_avg_pool2d(feats, grid)  # (B·T, E, grid, grid)
        feats = rearrange(feats, "(b t) e h w -> b t h w e", b=b, t=t)
        feats = feats.reshape(b, t // cfg.tubelet, cfg.tubelet, grid, grid, -1).mean(2)  # average a tubelet
        return feats.reshape(b, -1, feats.shape[-1])

    def forward(self, model, teacher, batch):
        p = prepare(model, batch, self.cfg.label_dropout)
        b, n = p.weight.shape
        tau = fix_layout(sample_per_token(self.cfg.timesteps, b, n, p.weight.device), p)
        blk = self.student_block
        pred, hidden = model(
            noised(model, p, tau), tau, y=p.y, cond=p.cond, return_blocks=(blk,), fixed=p.fixed
        )
        loss_flow, metrics = flow_loss(model, pred, p, tau, self.cfg.group_weights)
        frames = model.group_slices()["frames"]
        student = self.projector(hidden[blk][:, frames]).float()
        target = self.target_features(model, batch["x"])
        loss_rep = (1 - F.cosine_similarity(student, target, dim=-1)).mean()
        metrics.update(loss_flow=loss_flow.detach().item(), loss_rep=loss_rep.detach().item())
        return loss_flow + self.cfg.coeff * loss_rep, metrics
