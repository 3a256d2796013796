"""Inference with the world model: sample only the tokens a mode denoises, with few Euler steps.

The noised tokens of all groups are packed into one (B, M) state so the flow module's samplers integrate
them unchanged; clean tokens sit at t = 0 and absent ones at t = 1 throughout (DESIGN.md §2).
"""

from __future__ import annotations

import torch

from worldflow import flow
from worldflow.errors import ConfigError
from worldflow.worldmodel.modes import LAYOUT, MODES, layout_masks


@torch.no_grad()
def predict(
    model,
    context_frames: torch.Tensor,
    cond: torch.Tensor,
    mode: str = "policy",
    actions: torch.Tensor | None = None,
    future_frames: torch.Tensor | None = None,
    steps: int = 10,
    method: str = "euler",
    seed: int | None = None,
    kv_cache: bool | None = None,
) -> dict[str, torch.Tensor]:
    """context_frames (B, C, 3, S, S) in [-1, 1]; cond (B, cond_dim); actions (B, H_a, 7) normalised where the
    mode conditions on them (forward); future_frames (B, H, 3, S, S) where it conditions on them (inverse).
    Returns {"actions": (B, H_a, 7)} and/or {"frames": (B, H, 3, S, S)} for the denoised groups.

    kv_cache: compute the fixed tokens' keys/values once and run only the noised tokens at each step;
    exact for a model trained with `isolate_fixed` (None: use it whenever the model was)."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; modes: {list(MODES)}")
    cfg = model.cfg
    b, context = context_frames.shape[:2]
    horizon = cfg.frames - context
    dev = context_frames.device
    clean, absent = layout_masks(model, context, [mode] * b, dev)
    noised = ~clean & ~absent
    slices = model.group_slices()
    future_layout, action_layout = LAYOUT[mode]
    if future_frames is None:
        if future_layout == "clean":
            raise ConfigError(f"mode {mode!r} conditions on future frames: pass future_frames")
        future_frames = torch.zeros(b, horizon, *context_frames.shape[2:], device=dev)
    if actions is None:
        if action_layout == "clean":
            raise ConfigError(f"mode {mode!r} conditions on actions: pass actions")
        actions = torch.zeros(b, *model.groups["actions"], device=dev)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    x0 = {"frames": model.patchify(torch.cat([context_frames, future_frames], 1)), "actions": actions.float()}
    x1 = {g: torch.randn(v.shape, generator=gen).to(dev) for g, v in x0.items()}
    fixed = {g: torch.where(absent[:, s, None], x1[g], x0[g]) for g, s in slices.items()}
    sel = {g: noised[0, s] for g, s in slices.items()}  # same layout for every sample

    def unpack(state: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for g, tokens in fixed.items():
            n, d = int(sel[g].sum()), tokens.shape[-1]
            t = tokens.clone()
            t[:, sel[g]] = state[:, start : start + n * d].view(b, n, d)
            out[g] = t
            start += n * d
        return out

    def taus(t: torch.Tensor) -> torch.Tensor:
        return torch.where(clean, 0.0, torch.where(absent, 1.0, t[:, None].expand_as(clean).float()))

    if kv_cache is None:
        kv_cache = cfg.isolate_fixed
    if kv_cache:
        order = torch.arange(clean.shape[1], device=dev)
        fixed_idx, noised_idx = order[~noised[0]], order[noised[0]]
        cache = model.cache_fixed(fixed, taus(torch.ones(b, device=dev)), fixed_idx, cond=cond)

    def fn(state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if kv_cache:
            v = model.forward_cached(unpack(state), taus(t), noised_idx, cache, cond=cond)
            return torch.cat([v[g].flatten(1) for g in fixed if g in v], dim=1)
        v, _ = model(unpack(state), taus(t), cond=cond, fixed=clean | absent)
        return torch.cat([v[g][:, sel[g]].flatten(1) for g in fixed], dim=1)

    start = torch.cat([x1[g][:, sel[g]].flatten(1) for g in fixed], dim=1)
    result = unpack(flow.sample(fn, start, method=method, steps=steps))
    out = {}
    if sel["actions"].any():
        out["actions"] = result["actions"]
    if sel["frames"].any():
        out["frames"] = model.unpatchify(result["frames"])[:, context:].clamp(-1, 1)
    return out
