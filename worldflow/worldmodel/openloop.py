"""Open-loop prediction on held-out episodes: future frames from true actions (forward dynamics) beside the
truth and the copy-last-frame baseline as a video, predicted vs true actions (policy mode) as a plot,
PSNR/SSIM per horizon step and action errors in a JSON.

Every frame score stands beside the same score of trivial predictions on the same windows (`baselines`):
copying the last context frame, and the training episodes' mean frame; and beside the model's own
prediction from another window's action chunk (same frames, condition and noise), so that "the frames
follow the actions" is a number: with true actions the error must be lower. `moving_psnr` scores only the
pixels where the truth differs from the last context frame, where copying scores worst.

`action_image_sensitivity` asks whether the policy looks at the image at all: each window's chunk is sampled
again, with the same condition and noise, from the next window's context frames, and the mean change is
divided by the mean difference between the two windows' true chunks. Near 0, actions ignore the image (e.g.
a grasp aimed at the average object position); near 1 or above, swapping the image moves them as much as
the truth moves. `action_noise_sensitivity` is the same ratio with the sampling noise changed instead of the
frames: when it is the larger one, the seed decides the chunk more than the image does (a policy sampling
the data's spread of object positions rather than looking for the object)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worldflow.metrics.video import psnr, ssim
from worldflow.train import collate
from worldflow.viz import save_video, to_uint8
from worldflow.worldmodel.infer import predict


@dataclass
class OpenLoopConfig:
    windows: int = 8  # held-out windows evaluated, evenly spaced over the held-out episodes
    steps: int = 10  # Euler steps
    seed: int = 0


@torch.no_grad()
def evaluate_open_loop(model, dataset, cfg: OpenLoopConfig, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    model.eval()
    device = next(model.parameters()).device
    idx = np.linspace(0, len(dataset) - 1, min(cfg.windows, len(dataset))).round().astype(int)
    batch = {k: v.to(device) for k, v in collate([dataset[int(i)] for i in idx]).items()}
    context = model.cfg.frames - dataset.horizon
    ctx, future = batch["x"][:, :context], batch["x"][:, context:]
    pred_frames = predict(
        model, ctx, batch["cond"], "forward", actions=batch["actions"], steps=cfg.steps, seed=cfg.seed
    )["frames"]
    pred_actions = predict(model, ctx, batch["cond"], "policy", steps=cfg.steps, seed=cfg.seed)["actions"]
    dim = len(dataset.stats.q01)  # the robot's action channels; a terminate channel follows them
    sensitivity = image_sensitivity(model, ctx, batch["cond"], batch["actions"], pred_actions, cfg, dim)
    noise = noise_sensitivity(model, ctx, batch["cond"], batch["actions"], pred_actions, cfg, dim)

    other_frames = predict(  # the same noise, another window's action chunk: do the frames follow actions?
        model,
        ctx,
        batch["cond"],
        "forward",
        actions=batch["actions"].roll(1, 0),
        steps=cfg.steps,
        seed=cfg.seed,
    )["frames"]
    valid_f = batch["frame_valid"][:, context:]
    copy_last = ctx[:, -1:].expand_as(future)
    mean = mean_frame(dataset).to(device).expand_as(future)
    frames_report = {
        name: frame_scores(guess, future, ctx[:, -1], valid_f)
        for name, guess in (
            ("model", pred_frames),
            ("other_actions", other_frames),
            ("copy_last", copy_last),
            ("mean_frame", mean),
        )
    }
    model_scores = frames_report.pop("model")
    following = action_following(pred_frames, other_frames, future, ctx[:, -1], valid_f)
    x0_mse = denoising_mse(model, batch, context, {"copy_last": copy_last, "mean_frame": mean}, cfg.seed)
    valid_a = batch["action_valid"].float()[..., None]
    stats = dataset.stats
    env_pred = stats.denormalize(pred_actions[..., :dim].cpu().numpy())
    env_true = stats.denormalize(batch["actions"][..., :dim].cpu().numpy())
    env_err = np.abs(env_pred - env_true) * valid_a.cpu().numpy()
    n_valid = float(valid_a.sum())

    def action_l1(guess: torch.Tensor) -> float:
        return float(
            ((guess[..., :dim] - batch["actions"][..., :dim]).abs() * valid_a).sum() / (n_valid * dim)
        )

    metrics = {
        "windows": len(idx),
        **model_scores,
        # the same scores for the same windows: another window's actions and the two trivial predictions
        "baselines": frames_report,
        # per window, true actions against another window's: do the predicted frames follow the actions?
        "action_following": following,
        "x0_mse": x0_mse,
        "action_l1_normalized": action_l1(pred_actions),
        # trivial chunks scored the same way: another held-out window's true chunk, and all zeros (the
        # centre of the normalised range; a sampled chunk pays for the data's spread, a constant does not)
        "action_baselines": {
            "other_window": action_l1(batch["actions"].roll(1, 0)),
            "zero": action_l1(torch.zeros_like(batch["actions"])),
        },
        "action_l1_per_dim_env_units": (env_err.sum((0, 1)) / n_valid).tolist(),
        "gripper_accuracy": float(
            (((env_pred[..., -1] > 0.5) == (env_true[..., -1] > 0.5)) * valid_a[..., 0].cpu().numpy()).sum()
            / n_valid
        ),
    }
    if sensitivity is not None:
        metrics["action_image_sensitivity"] = sensitivity
        metrics["action_noise_sensitivity"] = noise
    if (
        pred_actions.shape[-1] > dim
    ):  # terminate channel: does the model end the (sub)task where the data does
        agree = ((pred_actions[..., dim] > 0) == (batch["actions"][..., dim] > 0)).float() * valid_a[..., 0]
        metrics["terminate_accuracy"] = float(agree.sum() / n_valid)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".openloop.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1))
    tmp.replace(out_dir / "openloop.json")
    # Video: per window, [context | true future] over [context | predicted future] over [context | copy of
    # the last context frame], windows side by side.
    rows = torch.cat(
        [torch.cat([ctx, f], 1) for f in (future, pred_frames, copy_last)], dim=-2
    )  # (B, T, 3, 3S, S)
    frames = to_uint8(torch.cat(list(rows[: min(4, len(rows))]), dim=-1).cpu())  # (T, 3S, k·S, 3)
    save_video(frames, out_dir / "frames.gif", fps=3)
    plot_actions(env_true[0], env_pred[0], out_dir / "actions.png")
    base = metrics["baselines"]
    print(
        f"open-loop: PSNR {metrics['psnr']:.2f} dB (another window's actions {base['other_actions']['psnr']:.2f}, "
        f"copy last frame {base['copy_last']['psnr']:.2f}, mean frame {base['mean_frame']['psnr']:.2f}), "
        f"moving-region PSNR {metrics['moving_psnr']:.2f} dB (another window's actions "
        f"{base['other_actions']['moving_psnr']:.2f}, copy {base['copy_last']['moving_psnr']:.2f}, mean "
        f"{base['mean_frame']['moving_psnr']:.2f}), SSIM {metrics['ssim']:.3f}, action L1 {metrics['action_l1_normalized']:.3f} "
        f"(another window's {metrics['action_baselines']['other_window']:.3f}, zeros "
        f"{metrics['action_baselines']['zero']:.3f}), "
        f"true actions beat another window's on {following['windows_true_better']:.0%} of windows "
        f"(moving region {following['moving_gain_db']:+.2f} dB, 95% interval "
        f"[{following['moving_gain_db_ci95'][0]:+.2f}, {following['moving_gain_db_ci95'][1]:+.2f}]), "
        f"image sensitivity {metrics.get('action_image_sensitivity', float('nan')):.3f}, "
        f"noise sensitivity {metrics.get('action_noise_sensitivity', float('nan')):.3f} -> {out_dir}"
    )
    return metrics


# A pixel is "moving" where the true frame differs from the last context frame by more than this in some
# channel ([-1, 1] units: 0.1 is ~13 of 255 levels, above JPEG-like noise, below any object's edge).
MOVING_THRESHOLD = 0.1


def moving_mask(future, last_ctx, valid) -> torch.Tensor:
    """(B, H, 1, S, S) bool: the valid frames' pixels where the truth differs from the last context frame."""
    moved = (future - last_ctx[:, None]).abs().amax(2, keepdim=True) > MOVING_THRESHOLD
    return moved & valid[..., None, None, None]


def frame_scores(guess, future, last_ctx, valid) -> dict:
    """PSNR and SSIM per horizon step over the valid frames, and PSNR on the moving region only: the pixels
    where the truth differs from the last context frame (squared errors pooled over those pixels of every
    valid frame at that step). A world model that copies its context scores high on whole frames and
    lowest here. guess, future (B, H, 3, S, S); last_ctx (B, 3, S, S); valid (B, H) bool."""
    valid_f = valid.float()
    per_step = lambda m: (m * valid_f).sum(0) / valid_f.sum(0).clamp_min(1)  # noqa: E731
    p, s = psnr(guess, future), ssim(guess, future)
    moving = moving_mask(future, last_ctx, valid)
    sq = ((guess.float() - future.float()) / 2).pow(2) * moving  # [0, 1] units, as psnr
    count = moving.sum((0, 2, 3, 4)) * guess.shape[2]  # (H,)
    moving_mse = sq.sum((0, 2, 3, 4)) / count.clamp_min(1)

    def to_db(mse, n):  # None where no pixel moved (JSON has no NaN)
        db = (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).reshape(-1).tolist()
        return [d if c > 0 else None for d, c in zip(db, n.reshape(-1).tolist(), strict=True)]

    return {
        "psnr_per_step": per_step(p).tolist(),
        "ssim_per_step": per_step(s).tolist(),
        "psnr": float((p * valid_f).sum() / valid_f.sum().clamp_min(1)),
        "ssim": float((s * valid_f).sum() / valid_f.sum().clamp_min(1)),
        "moving_psnr_per_step": to_db(moving_mse, count),
        "moving_psnr": to_db(sq.sum() / count.sum().clamp_min(1), count.sum())[0],
        "moving_fraction": float(moving.sum() / (valid_f.sum().clamp_min(1) * future[0, 0, 0].numel())),
    }


def action_following(true_guess, other_guess, future, last_ctx, valid) -> dict:
    """Paired, per window: the squared error of the frames predicted from the window's own actions against
    those from another window's (same frames, condition and noise), over each window's moving pixels (as
    `frame_scores`) and over whole frames. `moving_gain_db` is the mean over windows of
    10·log10(error with other actions / error with true actions), with a normal 95% interval; > 0 and an
    interval above 0 say the frames follow the actions. Windows without a moving pixel are left out of the
    moving-region numbers. true_guess, other_guess, future (B, H, 3, S, S); last_ctx (B, 3, S, S); valid (B, H)."""
    v = valid[..., None, None, None].float()
    moving = moving_mask(future, last_ctx, valid).float()

    def per_window(guess, mask):
        sq = (guess.float() - future.float()).pow(2) * mask
        n = mask.expand_as(sq).sum((1, 2, 3, 4))
        return sq.sum((1, 2, 3, 4)) / n.clamp_min(1), n > 0

    def gain(mask):
        true_err, ok = per_window(true_guess, mask)
        other_err, _ = per_window(other_guess, mask)
        g = 10 * torch.log10(other_err[ok].clamp_min(1e-10) / true_err[ok].clamp_min(1e-10))
        half = 1.96 * float(g.std()) / len(g) ** 0.5 if len(g) > 1 else float("inf")
        mean = float(g.mean()) if len(g) else 0.0
        better = float((other_err[ok] > true_err[ok]).float().mean()) if len(g) else 0.0
        return mean, [mean - half, mean + half], better, len(g)

    moving_gain, moving_ci, better, n = gain(moving)
    frame_gain, frame_ci, _, _ = gain(v.expand_as(future))
    return {
        "windows": n,
        "windows_true_better": better,  # on the moving region
        "moving_gain_db": moving_gain,
        "moving_gain_db_ci95": moving_ci,
        "frame_gain_db": frame_gain,
        "frame_gain_db_ci95": frame_ci,
    }


@torch.no_grad()
def denoising_mse(model, batch, context: int, baselines: dict, seed: int, ts=(1.0, 0.5, 0.1)) -> dict:
    """One forward pass per noise level: the mean squared error ([-1, 1] units) of the model's clean
    estimate x̂0 = x_t - t·v of the future frames, their tokens all at t, from the true context and actions
    (forward mode), beside the same error of each baseline's frames. At t = 1 a model that has learnt
    anything beats the mean frame; one that passes its input noise through does not."""
    from worldflow import flow
    from worldflow.worldmodel.modes import layout_masks, validity_mask

    x, b = batch["x"], batch["x"].shape[0]
    clean, absent = layout_masks(model, context, ["forward"] * b, x.device)
    frames = model.group_slices()["frames"]
    scored = (
        ~clean[:, frames]
        & validity_mask(model, batch["frame_valid"], batch["action_valid"])[:, frames].bool()
    )
    x0 = {"frames": model.patchify(x), "actions": batch["actions"].float()}
    gen = torch.Generator().manual_seed(seed)
    x1 = {g: torch.randn(v.shape, generator=gen).to(x.device) for g, v in x0.items()}

    def mse(tokens):
        per_token = (tokens.float() - x0["frames"].float()).pow(2).mean(-1)
        return float(per_token[scored].mean())

    ctx = x[:, :context]
    out = {name: mse(model.patchify(torch.cat([ctx, f], 1))) for name, f in baselines.items()}
    for t in ts:
        tau = torch.where(clean, 0.0, torch.where(absent, 1.0, t))
        x_t = {g: flow.interpolate(x0[g], x1[g], tau[:, s]) for g, s in model.group_slices().items()}
        v, _ = model(x_t, tau, cond=batch["cond"], fixed=clean | absent)
        out[f"model_t{t:g}"] = mse(flow.data_from_velocity(x_t["frames"], v["frames"], tau[:, frames]))
    return out


def mean_frame(dataset, max_frames: int = 4096) -> torch.Tensor:
    """(3, S, S) in [-1, 1]: the per-pixel mean of the frames of the episodes *not* in `dataset` (the
    training episodes beside a held-out set; all episodes if there are none), at most `max_frames` evenly
    spaced frames."""
    cache, held = dataset.cache, set(dataset.episodes)
    rows = [np.arange(start, start + n) for e, (start, n) in enumerate(cache.episodes) if e not in held]
    rows = np.concatenate(rows) if rows else np.arange(len(cache.frames))
    rows = rows[np.linspace(0, len(rows) - 1, min(max_frames, len(rows))).round().astype(int)]
    mean = cache.frames[np.unique(rows)].astype(np.float64).mean(0) / 127.5 - 1.0  # (S, S, 3)
    return torch.from_numpy(mean).float().permute(2, 0, 1)


@torch.no_grad()
def image_sensitivity(
    model, ctx, cond, true_actions, pred_actions, cfg: OpenLoopConfig, dim: int
) -> float | None:
    """Mean |policy(own frames) - policy(next window's frames)| over mean |true - next window's true|, the
    robot's `dim` action channels in normalised units, condition and noise unchanged (None for one window)."""
    if len(ctx) < 2:
        return None
    swapped = predict(model, ctx.roll(1, 0), cond, "policy", steps=cfg.steps, seed=cfg.seed)["actions"]
    return _relative_change(swapped, pred_actions, true_actions, dim)


@torch.no_grad()
def noise_sensitivity(
    model, ctx, cond, true_actions, pred_actions, cfg: OpenLoopConfig, dim: int
) -> float | None:
    """Mean |policy(seed) - policy(another seed)|, frames and condition unchanged, over the same scale as
    `image_sensitivity` (None for a single window)."""
    if len(ctx) < 2:
        return None
    other = predict(model, ctx, cond, "policy", steps=cfg.steps, seed=cfg.seed + 1)["actions"]
    return _relative_change(other, pred_actions, true_actions, dim)


def _relative_change(changed, pred_actions, true_actions, dim: int) -> float:
    """Mean |changed - pred| over mean |true - next window's true|, `dim` action channels, normalised units."""
    moved = (changed[..., :dim] - pred_actions[..., :dim]).abs().mean()
    truth = (true_actions.roll(1, 0)[..., :dim] - true_actions[..., :dim]).abs().mean()
    return float(moved / truth.clamp_min(1e-6))


def plot_actions(true: np.ndarray, pred: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dim = true.shape[-1]
    names = ["x", "y", "z", "rx", "ry", "rz", "gripper"] if dim == 7 else [f"a{d}" for d in range(dim)]
    fig, axes = plt.subplots(1, dim, figsize=(17 * dim / 7, 2.4), squeeze=False)
    axes = axes[0]
    for d, ax in enumerate(axes):
        ax.plot(true[:, d], "k-o", ms=3, label="true")
        ax.plot(pred[:, d], "r-o", ms=3, label="predicted")
        ax.set_title(names[d])
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}")
    fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    tmp.replace(path)
