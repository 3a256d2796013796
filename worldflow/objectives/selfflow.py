"""Self-Flow (Chefer et al. 2026, arXiv 2603.06507): dual-timestep scheduling + EMA self-distillation.

Recipe (DESIGN.md §1): per sample draw t and s independently (never sorted); a per-token mask M with a
ratio by modality gives tokens in M timestep s and the rest t; the student is trained with flow matching
on all tokens; the EMA teacher sees the same data and noise with every token at min(t, s), without
gradient and only up to block k; the student's block-l output goes through a projection head and is
pulled to the teacher's block-k output with a per-token (1 - cos) in fp32; L = L_flow + gamma·L_rep.
The ablations of DESIGN.md §6 are switches here, so each changes exactly the part it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from worldflow import flow
from worldflow.errors import ConfigError
from worldflow.model.sizes import default_blocks
from worldflow.objectives.common import Prepared, fix_layout, flow_loss, noised, prepare


@dataclass
class SelfFlowConfig:
    name: str = "selfflow"
    timesteps: flow.TimestepSampler = field(default_factory=flow.TimestepSampler)
    label_dropout: float = 0.1  # applied to student and teacher together (authors, issue #10)
    group_weights: dict[str, float] = field(default_factory=lambda: {"frames": 1.0, "actions": 1.0})
    mask_ratio_image: float = 0.25  # official README
    mask_ratio_video: float = 0.10  # paper [notes]
    mask_ratio_actions: float = 0.25  # our choice: the paper has no action tokens
    exact_count: bool = False  # False: Bernoulli per token; True: exactly round(ratio·N) tokens per sample
    student_block: int = 0  # 1-indexed; 0 = round(0.3·depth)
    teacher_block: int = 0  # 1-indexed; 0 = round(0.7·depth)
    gamma: float = 0.8
    # Ablations (DESIGN.md §6).
    rep_loss: bool = True  # False: dual timesteps only, no teacher
    dual_timesteps: bool = True  # False: s = t (one timestep per sample), representation loss only
    teacher_timesteps: str = "min"  # min: min(t, s) per token | student: the student's own timesteps
    attention_separation: bool = False  # arXiv 2607.02508: no attention between the two noise groups


class ProjectionHead(nn.Module):
    """Official `SimpleHead`: Linear(D, 2D) -> SiLU -> Linear(2D, D)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))

    def forward(self, x):
        return self.net(x)


def token_mask(model, cfg: SelfFlowConfig, b: int, device) -> torch.Tensor:
    """(B, N) bool: tokens that get the second timestep s. Ratio per group: image/video frames, actions."""
    parts = []
    for g, (n, _) in model.groups.items():
        if g == "frames":
            ratio = cfg.mask_ratio_video if model.cfg.frames > 1 else cfg.mask_ratio_image
        else:
            ratio = cfg.mask_ratio_actions
        if cfg.exact_count:
            ranks = torch.rand(b, n, device=device).argsort(dim=1).argsort(dim=1)
            parts.append(ranks < round(ratio * n))
        else:
            parts.append(torch.rand(b, n, device=device) < ratio)
    return torch.cat(parts, dim=1)


def separation_mask(mask: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """(B, 1, N, N) SDPA mask: tokens of the two noise groups do not attend to each other; clean or
    absent tokens (fixed) still attend and are attended to by everything."""
    same = mask[:, :, None] == mask[:, None, :]
    return (same | fixed[:, :, None] | fixed[:, None, :])[:, None]


class SelfFlow(nn.Module):
    def __init__(self, cfg: SelfFlowConfig, model):
        super().__init__()
        if cfg.teacher_timesteps not in ("min", "student"):
            raise ConfigError(f"objective.teacher_timesteps={cfg.teacher_timesteps!r}; use min or student")
        if not (cfg.rep_loss or cfg.dual_timesteps):
            raise ConfigError(
                "objective: rep_loss=false and dual_timesteps=false is vanilla; use objective=vanilla"
            )
        l_default, k_default = default_blocks(model.depth)
        self.student_block = cfg.student_block or l_default
        self.teacher_block = cfg.teacher_block or k_default
        for name, blk in (("student_block", self.student_block), ("teacher_block", self.teacher_block)):
            if not 1 <= blk <= model.depth:
                raise ConfigError(f"objective.{name}={blk} is outside the model's blocks 1..{model.depth}")
        self.cfg = cfg
        self.needs_teacher = cfg.rep_loss
        self.head = ProjectionHead(model.hidden) if cfg.rep_loss else None

    def timesteps(self, model, p: Prepared) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (student tau (B, N), teacher tau (B, N), mask (B, N))."""
        b, n = p.weight.shape
        dev = p.weight.device
        t = self.cfg.timesteps((b,), device=dev)
        s = self.cfg.timesteps((b,), device=dev) if self.cfg.dual_timesteps else t
        mask = (
            token_mask(model, self.cfg, b, dev)
            if self.cfg.dual_timesteps
            else torch.zeros(b, n, dtype=torch.bool, device=dev)
        )
        tau = torch.where(mask, s[:, None], t[:, None])  # never sorted: either group may be the noisier
        if self.cfg.teacher_timesteps == "min":
            tau_teacher = torch.minimum(t, s)[:, None].expand(b, n)
        else:
            tau_teacher = tau
        return fix_layout(tau, p), fix_layout(tau_teacher, p), mask

    def forward(self, model, teacher, batch):
        p = prepare(model, batch, self.cfg.label_dropout)
        tau, tau_teacher, mask = self.timesteps(model, p)
        attn_mask = separation_mask(mask, p.fixed) if self.cfg.attention_separation else None
        blocks = (self.student_block,) if self.cfg.rep_loss else ()
        pred, hidden = model(
            noised(model, p, tau),
            tau,
            y=p.y,
            cond=p.cond,
            return_blocks=blocks,
            attn_mask=attn_mask,
            fixed=p.fixed,
        )
        loss_flow, metrics = flow_loss(model, pred, p, tau, self.cfg.group_weights)
        loss = loss_flow
        metrics["loss_flow"] = loss_flow.detach().item()
        if self.cfg.rep_loss:
            if teacher is None:
                raise ConfigError("objective=selfflow with rep_loss needs the EMA teacher")
            with torch.no_grad():
                _, t_hidden = teacher(
                    noised(model, p, tau_teacher),
                    tau_teacher,
                    y=p.y,
                    cond=p.cond,
                    return_blocks=(self.teacher_block,),
                    stop_after=self.teacher_block,
                    fixed=p.fixed,
                )
            student = self.head(hidden[self.student_block]).float()
            target = t_hidden[self.teacher_block].detach().float()
            per_token = 1 - F.cosine_similarity(student, target, dim=-1)  # (B, N), fp32 (authors, issue #7)
            w = (~p.absent).float()
            loss_rep = (per_token * w).sum() / w.sum().clamp_min(1.0)
            loss = loss + self.cfg.gamma * loss_rep
            metrics["loss_rep"] = loss_rep.detach().item()
        metrics["mask_fraction"] = mask.float().mean().item()
        return loss, metrics
