"""Linear probe: accuracy of a linear classifier on frozen, mean-pooled block features (DESIGN.md §6)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def block_features(model, x: torch.Tensor, block: int, t: float = 0.0, batch: int = 128) -> torch.Tensor:
    """Mean-pooled output of `block` (1-indexed) on clean inputs (t = 0 by default) -> (N, D).
    Class-conditional models get the null label, so the label cannot leak into the features."""
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        tokens = {"frames": model.patchify(xb)}
        y = model.null_label(len(xb), xb.device) if model.y_embedder is not None else None
        _, hidden = model(tokens, torch.full((len(xb),), t), y=y, return_blocks=(block,), stop_after=block)
        out.append(hidden[block].mean(1))
    return torch.cat(out)


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    steps: int = 300,
    weight_decay: float = 1e-4,
) -> float:
    """Standardise with training statistics, fit multinomial logistic regression (full-batch L-BFGS), return
    test accuracy."""
    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    classes = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(a.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, train_y) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + bias).argmax(1) == test_y).float().mean())


def probe_split(n: int, test_fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = int(n * test_fraction)
    return perm[k:], perm[:k]
