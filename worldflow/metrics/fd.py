"""Fréchet distance between feature sets, and the offline domain FD: FD in the features of a small encoder
trained by the project on the benchmark's real data (seeded, cached by a hash of data and config), for
images and video (DESIGN.md §6). Nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldflow.encoders import ConvEncoder, load_encoder, save_encoder


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½), with Tr((S1 S2)^½) = Tr((S1^½ S2 S1^½)^½) computed
    from symmetric eigendecompositions (stable without scipy's sqrtm)."""
    s1_half = _sqrt_psd(sigma1)
    middle = s1_half @ sigma2 @ s1_half
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return max(
        0.0, float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt)
    )  # >= 0 up to rounding


def fd_of(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*feature_stats(a), *feature_stats(b))


@dataclass
class DomainEncoderConfig:
    width: int = 32
    dim: int = 64
    downs: int = 3
    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


class _Trainer(nn.Module):
    """Encoder + a linear head on pooled features: a classifier when labels exist, else a small
    autoencoder-free objective (predict the image's 4×4 colour thumbnail), so unlabelled data works too."""

    def __init__(self, enc: ConvEncoder, num_classes: int, channels: int):
        super().__init__()
        self.enc = enc
        out = num_classes if num_classes > 0 else channels * 16
        self.head = nn.Linear(enc.dim, out)

    def forward(self, x):
        return self.head(self.enc(x).mean((-2, -1)))


def _frames(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(0, 1) if x.ndim == 5 else x


def train_domain_encoder(
    images: torch.Tensor, labels: torch.Tensor | None, cfg: DomainEncoderConfig
) -> ConvEncoder:
    """images (N, C, H, W) or (N, T, C, H, W) in [-1, 1]; labels (N,) or None."""
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    c = images.shape[-3]
    enc = ConvEncoder(c, cfg.width, cfg.dim, cfg.downs)
    num_classes = int(labels.max()) + 1 if labels is not None else 0
    net = _Trainer(enc, num_classes, c)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    n = len(images)
    for _ in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g)
        x = images[idx]
        if x.ndim == 5:  # one random frame per clip
            x = x[torch.arange(len(x)), torch.randint(0, x.shape[1], (len(x),), generator=g)]
        out = net(x)
        if num_classes:
            loss = F.cross_entropy(out, labels[idx])
        else:
            loss = F.mse_loss(out, F.adaptive_avg_pool2d(x, 4).flatten(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc.eval().requires_grad_(False)


@torch.no_grad()
def encode(enc: nn.Module, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Pooled features: images -> (N, dim); videos -> (N, 2·dim) = [mean over frames, mean |Δ frame|]
    (the second half sees motion, in the spirit of FVD's video features)."""
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].float()
        f = enc(_frames(xb)).mean((-2, -1))
        if xb.ndim == 5:
            f = f.view(xb.shape[0], xb.shape[1], -1)
            f = torch.cat([f.mean(1), (f[:, 1:] - f[:, :-1]).abs().mean(1)], dim=1)
        out.append(f)
    return torch.cat(out).numpy()


def data_hash(images: torch.Tensor, labels: torch.Tensor | None, cfg: DomainEncoderConfig) -> str:
    h = hashlib.sha256(images.numpy().tobytes())
    if labels is not None:
        h.update(labels.numpy().tobytes())
    h.update(json.dumps(asdict(cfg), sort_keys=True).encode())
    return h.hexdigest()[:16]


class DomainFD:
    """Fréchet distance to a reference set in a project-trained encoder's features, cached by hash."""

    def __init__(
        self,
        real: torch.Tensor,
        labels: torch.Tensor | None,
        cache_dir: str | Path,
        cfg: DomainEncoderConfig | None = None,
    ):
        cfg = cfg or DomainEncoderConfig()
        self.key = data_hash(real, labels, cfg)
        path = Path(cache_dir) / f"domain_encoder-{self.key}.safetensors"
        if path.is_file():
            self.encoder = load_encoder(path)
        else:
            self.encoder = train_domain_encoder(real, labels, cfg)
            save_encoder(self.encoder, path)
        self.path = path
        self.real_stats = feature_stats(encode(self.encoder, real))

    def __call__(self, samples: torch.Tensor) -> float:
        return frechet_distance(*feature_stats(encode(self.encoder, samples)), *self.real_stats)
