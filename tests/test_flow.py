import pytest
import torch

from worldflow import flow
from worldflow.errors import ConfigError


def test_time_convention_by_hand():
    x0 = torch.tensor([[1.0, 2.0]])
    x1 = torch.tensor([[-1.0, 0.5]])
    t = torch.tensor([0.25])
    # x_t = 0.75·x0 + 0.25·x1
    assert torch.allclose(flow.interpolate(x0, x1, t), torch.tensor([[0.5, 1.625]]))
    assert torch.equal(flow.interpolate(x0, x1, torch.tensor([0.0])), x0)  # t = 0 is data
    assert torch.equal(flow.interpolate(x0, x1, torch.tensor([1.0])), x1)  # t = 1 is noise
    assert torch.allclose(flow.velocity_target(x0, x1), torch.tensor([[-2.0, -1.5]]))
    v = flow.velocity_target(x0, x1)
    xt = flow.interpolate(x0, x1, t)
    assert torch.allclose(flow.data_from_velocity(xt, v, t), x0)
    assert torch.allclose(flow.noise_from_velocity(xt, v, t), x1)


def test_x_prediction_turns_the_clean_estimate_into_the_velocity_with_jits_clamp():
    torch.manual_seed(0)
    x0, x1 = torch.randn(4, 5, 6), torch.randn(4, 5, 6)
    t = torch.tensor([[1.0, 0.5, 0.1, flow.T_EPS, 0.01]]).expand(4, 5)  # per token
    xt = flow.interpolate(x0, x1, t)
    v = flow.to_velocity(x0, xt, t, "x")  # what a perfect x-predictor hands the samplers
    torch.testing.assert_close(v[:, :4], (x1 - x0)[:, :4])  # the true velocity wherever t >= T_EPS
    torch.testing.assert_close(v[:, 4], (0.01 / flow.T_EPS) * (x1 - x0)[:, 4])  # clamped below it
    torch.testing.assert_close(flow.velocity_target(x0, x1, t, "x"), v)  # the target clamps the same way
    torch.testing.assert_close(flow.data_from_velocity(xt, v, t)[:, :4], x0[:, :4])
    torch.testing.assert_close(flow.velocity_target(x0, x1, t, "v"), x1 - x0)
    assert torch.equal(flow.to_velocity(x1, xt, t, "v"), x1)  # v-prediction passes through
    with pytest.raises(ConfigError, match="model.prediction='eps'"):
        flow.to_velocity(x0, xt, t, "eps")
    with pytest.raises(ConfigError, match="needs the timesteps"):
        flow.velocity_target(x0, x1, None, "x")


def test_per_token_interpolation():
    x0, x1 = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    t = torch.tensor([[0.0, 0.5, 1.0]])
    assert torch.allclose(flow.interpolate(x0, x1, t)[0, :, 0], torch.tensor([0.0, 0.5, 1.0]))


def test_timestep_samplers():
    torch.manual_seed(0)
    u = flow.TimestepSampler("uniform")((100_000,))
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    ln = flow.TimestepSampler("logit_normal", mean=0.0, std=1.0)((100_000,))
    assert abs(ln.median() - 0.5) < 0.01 and ln.min() > 0 and ln.max() < 1
    sh = flow.TimestepSampler("shifted", shift=3.0)((100_000,))
    assert sh.mean() > 0.6  # shifted towards noise
    assert abs((sh < 0.5).float().mean() - 0.25) < 0.01  # P(3u/(1+2u) < 0.5) = P(u < 0.25)
    with pytest.raises(ConfigError, match="unknown timestep sampler"):
        flow.TimestepSampler("cosine")


MU, SIGMA = 2.0, 0.5


def gaussian_velocity(x, t):
    """The exact velocity field for data N(MU, SIGMA^2): v = E[x1 - x0 | x_t]."""
    t = t[:, None].to(x.dtype)
    a, b = 1 - t, t
    var = a * a * SIGMA**2 + b * b
    e_x0 = MU + a * SIGMA**2 / var * (x - a * MU)
    e_x1 = b / var * (x - a * MU)
    return e_x1 - e_x0


@pytest.mark.parametrize("method,steps,tol", [("euler", 200, 0.02), ("heun", 40, 0.01), ("sde", 250, 0.03)])
def test_samplers_integrate_gaussian_flow(method, steps, tol):
    x1 = torch.randn(40_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = {"generator": torch.Generator().manual_seed(1)} if method == "sde" else {}
    x0 = flow.sample(gaussian_velocity, x1, method=method, steps=steps, **kw)
    assert abs(x0.mean().item() - MU) < tol
    assert abs(x0.std().item() - SIGMA) < tol


def test_classifier_free_guidance_and_interval():
    cond = lambda x, t: torch.ones_like(x)  # noqa: E731
    uncond = lambda x, t: torch.zeros_like(x)  # noqa: E731
    fn = flow.guided(cond, uncond, scale=3.0, interval=(0.0, 0.7))
    x = torch.zeros(2, 4)
    out = fn(x, torch.tensor([0.5, 0.9]))
    assert torch.allclose(out[0], torch.full((4,), 3.0))  # inside: u + 3·(c - u)
    assert torch.allclose(out[1], torch.ones(4))  # outside the interval: conditional only
