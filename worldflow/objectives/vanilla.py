"""Vanilla flow matching (SiT / rectified flow): one timestep per sample, MSE on the velocity."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from worldflow import flow
from worldflow.objectives.common import fix_layout, flow_loss, noised, prepare, sample_per_token


@dataclass
class VanillaConfig:
    name: str = "vanilla"
    timesteps: flow.TimestepSampler = field(default_factory=flow.TimestepSampler)
    label_dropout: float = 0.1
    group_weights: dict[str, float] = field(default_factory=lambda: {"frames": 1.0, "actions": 1.0})


class VanillaFlow(nn.Module):
    needs_teacher = False

    def __init__(self, cfg: VanillaConfig, model):
        super().__init__()
        self.cfg = cfg

    def forward(self, model, teacher, batch):
        p = prepare(model, batch, self.cfg.label_dropout)
        b, n = p.weight.shape
        tau = fix_layout(sample_per_token(self.cfg.timesteps, b, n, p.weight.device), p)
        pred, _ = model(noised(model, p, tau), tau, y=p.y, cond=p.cond, fixed=p.fixed)
        loss, metrics = flow_loss(model, pred, p, tau, self.cfg.group_weights)
        metrics["loss_flow"] = loss.detach().item()
        return loss, metrics
