import math

import numpy as np
import pytest
import torch

from tests.conftest import randomize_zero_init
from worldflow.metrics.fd import DomainEncoderConfig, DomainFD, fd_of, frechet_distance
from worldflow.metrics.probe import block_features, linear_probe
from worldflow.metrics.video import psnr, ssim


def test_frechet_distance_closed_form():
    # 1-D Gaussians: FD = (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])
    ) == pytest.approx(4 + 1)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 8))
    assert fd_of(a, a) == pytest.approx(0.0, abs=1e-8)
    shifts = [fd_of(a, a + s) for s in (0.5, 1.0)]
    assert shifts[0] == pytest.approx(8 * 0.25, rel=1e-6) and shifts[1] == pytest.approx(8.0, rel=1e-6)


def test_domain_fd_zero_on_itself_and_grows_with_shift(tmp_path):
    torch.manual_seed(0)
    labels = torch.arange(256) % 4
    x = torch.rand(256, 3, 16, 16) * 0.2 - 0.6
    for c in range(3):
        x[labels == c, c] += 1.0
    cfg = DomainEncoderConfig(width=8, dim=16, steps=30, batch_size=32)
    fd = DomainFD(x, labels, tmp_path, cfg)
    assert fd(x) == pytest.approx(0.0, abs=1e-6)
    small, large = fd((x + 0.1).clamp(-1, 1)), fd((x + 0.5).clamp(-1, 1))
    assert 0 < small < large
    again = DomainFD(x, labels, tmp_path, cfg)  # cached by hash: same encoder file, same number
    assert again.path == fd.path and again(x + 0.1) == pytest.approx(small, rel=1e-6)
    video = x[:64].view(16, 4, 3, 16, 16)
    vfd = DomainFD(video, None, tmp_path, cfg)
    static = video[:, :1].expand_as(video)  # same frames, no motion
    assert vfd(video) == pytest.approx(0.0, abs=1e-6) and vfd(static) > vfd(video) + 1e-3


def test_psnr_and_ssim_by_hand():
    a = torch.zeros(1, 3, 16, 16)
    b = a + 0.2  # error 0.1 on [0, 1] -> MSE 0.01 -> 20 dB
    assert psnr(b, a).item() == pytest.approx(20.0, abs=1e-4)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    # constant images: SSIM = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
    mx, my, c1 = 0.5, 0.6, 0.01**2
    assert ssim(b, a).item() == pytest.approx((2 * mx * my + c1) / (mx**2 + my**2 + c1), rel=1e-5)
    noisy = (a + torch.randn_like(a) * 0.3).clamp(-1, 1)
    assert ssim(noisy, a).item() < 0.9
    assert psnr(torch.zeros(2, 5, 3, 8, 8), torch.zeros(2, 5, 3, 8, 8)).shape == (2, 5)


def test_linear_probe_separates_separable_features(tiny_model):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 4
    centers = torch.randn(4, 10, generator=g) * 3
    x = centers[y] + torch.randn(400, 10, generator=g)
    assert linear_probe(x[:300], y[:300], x[300:], y[300:]) > 0.95
    assert (
        linear_probe(torch.randn(300, 10, generator=g), y[:300], torch.randn(100, 10, generator=g), y[300:])
        < 0.5
    )
    m = randomize_zero_init(tiny_model())
    f = block_features(m, torch.randn(6, 3, 16, 16), block=2)
    assert f.shape == (6, m.hidden)


def test_steps_to_reach_interpolates():
    from worldflow.metrics.convergence import crossing, mean_std

    # the step at which a decreasing metric first reaches the target: `at` is the steps themselves
    assert crossing([100, 200, 300], [10.0, 6.0, 2.0], 4.0, [100, 200, 300]) == pytest.approx(250.0)
    assert crossing([100, 200], [3.0, 2.0], 5.0, [100, 200]) == 100.0
    assert crossing([100, 200], [9.0, 8.0], 5.0, [100, 200]) == float("inf")
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert mean_std([1.0, float("inf")])[0] == float("inf")


def test_fid_code_path_with_known_features(tmp_path):
    from worldflow.errors import CheckpointError
    from worldflow.metrics.fid import FIDInception, fid, load_inception

    # a "network" whose features are the per-channel means: FID between two sets is then known in closed form
    net = lambda x: x.mean((-2, -1))  # noqa: E731
    g = torch.Generator().manual_seed(0)
    real = torch.randn(3000, 3, 4, 4, generator=g) * 0.1
    assert fid(net, real, real) == pytest.approx(0.0, abs=1e-9)
    shifted = real + 0.5
    assert fid(net, real, shifted) == pytest.approx(3 * 0.25, rel=1e-6)
    with pytest.raises(CheckpointError, match="pt_inception-2015-12-05-6726825d.pth.*never downloads"):
        load_inception(tmp_path / "missing.pth")
    # the architecture loads a state dict with its own (pytorch-fid) key names and gives 2048-d features
    torch.save(FIDInception().state_dict(), tmp_path / "inception.pth")
    net = load_inception(tmp_path / "inception.pth")
    assert "Mixed_7c.branch3x3dbl_3b.conv.weight" in net.state_dict()
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 2048)
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not hold the FID Inception-v3 weights"):
        load_inception(tmp_path / "other.pth")


def test_crossing_interpolates_seconds_and_relative_change():
    from worldflow.metrics.convergence import crossing, relative_change

    # FD 10 -> 6 -> 2 at seconds 5, 15, 35: FD 4 is crossed half-way between the last two evaluations
    assert crossing([100, 200, 300], [10.0, 6.0, 2.0], 4.0, [5.0, 15.0, 35.0]) == pytest.approx(25.0)
    assert crossing([100, 200], [9.0, 8.0], 5.0, [1.0, 2.0]) == float("inf")
    # the last 1000 steps go from 200 to 100: a change of 0.5
    assert relative_change([0, 1000, 2000], [400.0, 200.0, 100.0], 1000) == pytest.approx(0.5)
    # step 2000 lies between two evaluations: 150 interpolated, then 100
    assert relative_change([0, 1000, 3000], [400.0, 200.0, 100.0], 1000) == pytest.approx(1 / 3)
    assert math.isnan(relative_change([0, 500], [2.0, 1.0], 1000))
