"""What every objective shares: the batch -> token groups, per-token timesteps, label dropout, the loss.

A batch is a dict: "x" (B, C, H, W) or (B, T, C, H, W) in [-1, 1]; optional "y" (B,) labels, "cond"
(B, cond_dim), "actions" (B, H_a, A), and per-token masks over the model's N tokens (groups in model order):
"clean" (B, N) bool tokens given at t = 0 (context), "absent" (B, N) bool tokens held at pure noise t = 1
and not predicted, "loss_mask" (B, N) float weights (e.g. padding = 0). Clean and absent tokens are not
in the loss. This is how the world model's modes (DESIGN.md §2) reach one objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldflow import flow
from worldflow.errors import ConfigError


@dataclass
class Prepared:
    x0: dict[str, torch.Tensor]  # group -> (B, N_g, P_g) clean tokens
    x1: dict[str, torch.Tensor]  # group -> noise of the same shape
    y: torch.Tensor | None
    cond: torch.Tensor | None
    clean: torch.Tensor  # (B, N) bool
    absent: torch.Tensor  # (B, N) bool
    weight: torch.Tensor  # (B, N) float: which tokens are in the flow loss

    @property
    def fixed(self) -> torch.Tensor:
        """(B, N) bool: tokens not being denoised (the model's `isolate_fixed` option uses it)."""
        return self.clean | self.absent


def drop_labels(model, y: torch.Tensor | None, p: float) -> torch.Tensor | None:
    """Replace labels by the null class with probability p (CFG training, 10% in DiT/SiT/Self-Flow)."""
    if y is None or p <= 0 or model.y_embedder is None:
        return y
    drop = torch.rand(y.shape, device=y.device) < p
    return torch.where(drop, model.null_label(y.shape[0], y.device), y)


def prepare(model, batch: dict, label_dropout: float) -> Prepared:
    x = batch["x"]
    b = x.shape[0]
    if tuple(x.shape[1:]) != model.cfg.sample_shape:
        raise ConfigError(
            f"batch['x'] has sample shape {tuple(x.shape[1:])} but the model expects {model.cfg.sample_shape}"
        )
    x0 = {"frames": model.patchify(x)}
    if "actions" in model.groups:
        if "actions" not in batch:
            raise ConfigError("the model has an action group but the batch has no 'actions'")
        x0["actions"] = batch["actions"].to(x.dtype)
    x1 = {g: torch.randn_like(v) for g, v in x0.items()}
    n = model.num_tokens
    clean = batch.get("clean", torch.zeros(b, n, dtype=torch.bool, device=x.device))
    absent = batch.get("absent", torch.zeros(b, n, dtype=torch.bool, device=x.device))
    weight = (~clean & ~absent).to(x.dtype)
    if "loss_mask" in batch:
        weight = weight * batch["loss_mask"].to(x.dtype)
    y = drop_labels(model, batch.get("y"), label_dropout)
    return Prepared(x0, x1, y, batch.get("cond"), clean, absent, weight)


def fix_layout(tau: torch.Tensor, p: Prepared) -> torch.Tensor:
    """Clean tokens sit at t = 0 and absent ones at t = 1, whatever was drawn."""
    return torch.where(p.clean, torch.zeros_like(tau), torch.where(p.absent, torch.ones_like(tau), tau))


def noised(model, p: Prepared, tau: torch.Tensor) -> dict[str, torch.Tensor]:
    """Interpolate each group at its tokens' timesteps; tau is (B, N)."""
    return {g: flow.interpolate(p.x0[g], p.x1[g], tau[:, s]) for g, s in model.group_slices().items()}


def flow_loss(
    model,
    pred: dict[str, torch.Tensor],
    p: Prepared,
    tau: torch.Tensor,
    group_weights: dict[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean squared velocity error per group over the tokens in the loss, summed with group weights; tau
    (B, N) are the timesteps the tokens were noised at (the x-prediction target depends on them)."""
    total = torch.zeros((), device=p.weight.device)
    metrics = {}
    for g, s in model.group_slices().items():
        target = flow.velocity_target(p.x0[g], p.x1[g], tau[:, s], model.cfg.prediction)
        per_token = (pred[g].float() - target.float()).pow(2).mean(-1)  # (B, N_g)
        w = p.weight[:, s].float()
        loss_g = (per_token * w).sum() / w.sum().clamp_min(1.0)
        total = total + (group_weights or {}).get(g, 1.0) * loss_g
        metrics[f"loss_{g}"] = loss_g.detach().item()
    return total, metrics


def sample_per_token(sampler: flow.TimestepSampler, b: int, n: int, device) -> torch.Tensor:
    return sampler((b,), device=device)[:, None].expand(b, n).contiguous()
