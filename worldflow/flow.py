"""Flow matching: the one place for the time convention, timestep samplers, ODE/SDE samplers and CFG.

Convention (DESIGN.md §1): x_t = (1 - t)·x0 + t·x1, x0 = data, x1 ~ N(0, I); t = 1 is noise, t = 0 is
data; the loss is on the velocity v = x1 - x0. Samplers integrate from t = 1 down to t = 0.
A velocity function is any callable `fn(x, t) -> v` with t of shape (B,); the flow knows no model.

What the network outputs (`model.prediction`) is a separate choice, and this module is the one place that
turns it into a velocity (`to_velocity`): "v" outputs the velocity itself (SiT); "x" outputs the clean
data x̂0 and v̂ = (x_t - x̂0) / max(t, T_EPS) (Li & He 2025, "Back to Basics: Let Denoising Generative
Models Denoise", JiT, arXiv 2511.13720, LTH14/JiT): with large pixel patches the clean data lies on a
low-dimensional manifold a narrow network can output, where the velocity carries the full-dimensional
noise. The loss stays a v-loss, with the same clamp in the target (JiT's `denoiser.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from worldflow.errors import ConfigError

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) or (B, N) timesteps -> broadcastable against x of shape (B, ...) or (B, N, ...)."""
    return t.reshape(*t.shape, *([1] * (x.ndim - t.ndim))).to(x.dtype)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t)·x0 + t·x1 with t per sample (B,) or per token (B, N)."""
    tb = _bcast(t, x0)
    return (1 - tb) * x0 + tb * x1


PREDICTIONS = ("v", "x")
# JiT's t_eps: below it the division (x_t - x̂0) / t is clamped, in the prediction and in the target alike.
T_EPS = 0.05


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ConfigError(f"model.prediction={prediction!r}; use v (velocity) or x (clean data, JiT)")


def velocity_target(
    x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor | None = None, prediction: str = "v"
) -> torch.Tensor:
    """The v-loss target. Under x-prediction it is (x_t - x0) / max(t, T_EPS): x1 - x0 wherever t >= T_EPS,
    shrunk below it exactly as the prediction is, so the optimum of the loss is x̂0 = x0 at every t."""
    check_prediction(prediction)
    if prediction == "v":
        return x1 - x0
    if t is None:
        raise ConfigError("velocity_target under x-prediction needs the timesteps t")
    tb = _bcast(t, x0)
    return (x1 - x0) * (tb / tb.clamp_min(T_EPS))


def to_velocity(out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
    """The network's output -> the velocity the samplers integrate; t (B,) or (B, N) per token."""
    if prediction == "v":
        return out
    check_prediction(prediction)
    return (x_t - out) / _bcast(t, x_t).clamp_min(T_EPS)


def data_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_t] = x_t - t·v."""
    return x_t - _bcast(t, x_t) * v


def noise_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x1 | x_t] = x_t + (1 - t)·v."""
    return x_t + (1 - _bcast(t, x_t)) * v


# ----- timestep samplers --------------------------------------------------------------------------
@dataclass
class TimestepSampler:
    """Draws t in [0, 1]. kind: uniform | logit_normal (SD3: sigmoid of N(mean, std)) | shifted
    (uniform t mapped by SD3's shift s·t / (1 + (s - 1)·t), s > 1 moves mass towards noise)."""

    kind: str = "uniform"
    mean: float = 0.0
    std: float = 1.0
    shift: float = 1.0

    def __post_init__(self):
        if self.kind not in ("uniform", "logit_normal", "shifted"):
            raise ConfigError(f"unknown timestep sampler {self.kind!r}; use uniform, logit_normal or shifted")

    def __call__(self, shape, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.kind == "logit_normal":
            z = torch.randn(shape, device=device, generator=generator) * self.std + self.mean
            return torch.sigmoid(z)
        t = torch.rand(shape, device=device, generator=generator)
        if self.kind == "shifted":
            t = self.shift * t / (1 + (self.shift - 1) * t)
        return t


# ----- samplers -----------------------------------------------------------------------------------
def time_grid(steps: int, t_start: float = 1.0, t_end: float = 0.0) -> torch.Tensor:
    return torch.linspace(t_start, t_end, steps + 1)


@torch.no_grad()
def sample_ode(fn: VelocityFn, x1: torch.Tensor, steps: int = 50, method: str = "euler") -> torch.Tensor:
    """Integrate dx/dt = v from t = 1 (x1, noise) to t = 0. method: euler | heun (Heun's 2nd order;
    the last step is plain Euler since it lands on t = 0, as EDM does)."""
    if method not in ("euler", "heun"):
        raise ConfigError(f"unknown ODE method {method!r}; use euler or heun")
    x = x1
    ts = time_grid(steps).to(x1.device)
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        tb = t.expand(x.shape[0])
        v = fn(x, tb)
        x_next = x + (t_next - t) * v
        if method == "heun" and i < steps - 1:
            v_next = fn(x_next, t_next.expand(x.shape[0]))
            x_next = x + (t_next - t) * 0.5 * (v + v_next)
        x = x_next
    return x


@torch.no_grad()
def sample_sde(
    fn: VelocityFn,
    x1: torch.Tensor,
    steps: int = 250,
    diffusion: float = 1.0,
    t_min: float = 0.04,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Euler-Maruyama for the reverse SDE with the flow's marginals, as SiT's SDE sampler.

    With x_t = (1-t)x0 + t·x1 the score is -E[x1|x_t]/t; choosing g(t)^2 = 2·diffusion·t gives
    dx = [v + diffusion·E[x1|x_t]] dt + sqrt(2·diffusion·t) dW, integrated backwards from t = 1 to
    t_min, and a last deterministic step from t_min to 0 (x0 = x_t - t·v), which is what the official
    Self-Flow FID sampler does (250 steps, last step deterministic).
    """
    x = x1
    ts = time_grid(steps - 1, 1.0, t_min).to(x1.device)
    for i in range(steps - 1):
        t, t_next = ts[i], ts[i + 1]
        dt = t - t_next  # > 0
        tb = t.expand(x.shape[0])
        v = fn(x, tb)
        drift = v + diffusion * noise_from_velocity(x, v, tb)
        gen_device = generator.device if generator is not None else x.device
        noise = torch.randn(x.shape, device=gen_device, dtype=x.dtype, generator=generator).to(x.device)
        x = x - dt * drift + math.sqrt(2 * diffusion * float(t) * float(dt)) * noise
    t_last = ts[-1].expand(x.shape[0])
    return data_from_velocity(x, fn(x, t_last), t_last)


def guided(
    cond_fn: VelocityFn,
    uncond_fn: VelocityFn,
    scale: float,
    interval: tuple[float, float] = (0.0, 1.0),
) -> VelocityFn:
    """Classifier-free guidance v = v_u + scale·(v_c - v_u), applied only for t inside `interval`
    (noise-level time; Kynkäänniemi et al. 2024's guidance interval); outside it, the conditional v."""
    lo, hi = interval

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_c = cond_fn(x, t)
        inside = (t >= lo) & (t <= hi)
        if scale == 1.0 or not bool(inside.any()):
            return v_c
        v_u = uncond_fn(x, t)
        g = _bcast(inside.to(x.dtype) * (scale - 1.0) + 1.0, x)
        return v_u + g * (v_c - v_u)

    return fn


def sample(fn: VelocityFn, x1: torch.Tensor, method: str = "euler", steps: int = 50, **kw) -> torch.Tensor:
    """One entry for every sampler: method in euler | heun | sde."""
    if method == "sde":
        return sample_sde(fn, x1, steps=steps, **kw)
    return sample_ode(fn, x1, steps=steps, method=method)
