import pytest
import torch

from tests.conftest import randomize_zero_init
from worldflow import flow
from worldflow.errors import ConfigError
from worldflow.model.dit import DiT, ModelConfig, modulate
from worldflow.model.embed import patchify, sincos_grid, unpatchify
from worldflow.model.sizes import SIZES, default_blocks


def test_size_table_matches_sit():
    assert SIZES["S"] == (384, 12, 6)
    assert SIZES["B"] == (768, 12, 12)
    assert SIZES["L"] == (1024, 24, 16)
    assert SIZES["XL"] == (1152, 28, 16)
    assert default_blocks(28) == (8, 20)  # the official README's l and k for XL


def test_patchify_round_trip_and_token_order():
    x = torch.randn(2, 4, 3, 8, 8)
    tok = patchify(x, patch=4, tubelet=2)
    assert tok.shape == (2, 2 * 2 * 2, 2 * 4 * 4 * 3)
    assert torch.equal(unpatchify(tok, (4, 3, 8, 8), 4, 2), x)
    # token 1 is time-slot 0, row 0, column 1: pixels [0:2, :, 0:4, 4:8]
    assert torch.equal(tok[0, 1].view(2, 4, 4, 3), x[0, 0:2, :, 0:4, 4:8].permute(0, 2, 3, 1))
    img = torch.randn(3, 3, 8, 8)
    assert torch.equal(unpatchify(patchify(img, 4, 1), (3, 8, 8), 4, 1), img)


def test_positions_distinct_for_2d_and_3d():
    for t in (1, 3):
        pe = torch.from_numpy(sincos_grid(64, t, 4, 4))
        assert pe.shape == (t * 16, 64)
        dist = torch.cdist(pe, pe) + torch.eye(len(pe)) * 10
        assert dist.min() > 1e-3


def test_adaln_zero_init_outputs_zero(tiny_model):
    """The zero output layer: a velocity of 0 (v-prediction), a clean estimate of 0 (x-prediction)."""
    x, t, y = torch.randn(2, 16, 48), torch.rand(2) * 0.9 + 0.1, torch.tensor([0, 1])
    out, _ = tiny_model(prediction="v")({"frames": x}, t, y=y)
    assert torch.count_nonzero(out["frames"]) == 0
    out, _ = tiny_model(prediction="x")({"frames": x}, t, y=y)
    torch.testing.assert_close(flow.data_from_velocity(x, out["frames"], t), torch.zeros_like(x))


def test_uniform_per_token_t_equals_per_sample_t(tiny_model):
    m = randomize_zero_init(tiny_model()).eval()
    x = torch.randn(3, 16, 48)
    t = torch.tensor([0.1, 0.5, 0.9])
    y = torch.tensor([0, 2, 4])  # 4 = null class
    a, _ = m({"frames": x}, t, y=y)
    b, _ = m({"frames": x}, t[:, None].expand(3, 16), y=y)
    assert torch.equal(a["frames"], b["frames"])
    assert a["frames"].abs().mean() > 1e-3


def test_per_token_modulation_matches_naive_reference(tiny_model):
    """Computing adaLN once per distinct (sample, t) and gathering equals running it on every token."""
    m = randomize_zero_init(tiny_model(prediction="v")).eval()  # v: the output layer's values themselves
    x = torch.randn(2, 16, 48)
    t = torch.rand(2, 16)
    t[0, :8] = 0.3  # repeated values share one modulation row
    y = torch.tensor([1, 3])
    out, _ = m({"frames": x}, t, y=y)

    h = m.embed_in["frames"](x) + m.pos_embed
    c = m.t_embedder(t.reshape(-1)).view(2, 16, -1) + m.y_embedder(y)[:, None]
    for blk in m.blocks:
        s1, sc1, g1, s2, sc2, g2 = blk.adaLN(c).chunk(6, dim=-1)
        h = h + g1 * blk.attn(modulate(blk.norm1(h), s1, sc1), None)[0]
        h = h + g2 * blk.mlp(modulate(blk.norm2(h), s2, sc2))
    shift, scale = m.adaLN_out(c).chunk(2, dim=-1)
    ref = m.embed_out["frames"](modulate(m.norm_out(h), shift, scale))
    torch.testing.assert_close(out["frames"], ref, atol=1e-5, rtol=1e-4)


def test_x_prediction_model_returns_the_velocity_of_its_clean_estimate(tiny_model):
    mv, mx = randomize_zero_init(tiny_model(prediction="v")), randomize_zero_init(tiny_model(prediction="x"))
    tokens, y = {"frames": torch.randn(2, 16, 48)}, torch.tensor([0, 1])
    t = torch.rand(2, 16)
    t[:, 0] = 0.0  # a clean token: the clamp keeps it finite
    raw, _ = mv(tokens, t, y=y)  # the same weights read as a velocity: the output layer itself
    v, _ = mx(tokens, t, y=y)
    expected = (tokens["frames"] - raw["frames"]) / t.clamp_min(0.05)[..., None]
    torch.testing.assert_close(v["frames"], expected)
    with pytest.raises(ConfigError, match="model.prediction='eps'"):
        tiny_model(prediction="eps")


def test_timestep_changes_output_per_token(tiny_model):
    m = randomize_zero_init(tiny_model()).eval()
    x = torch.randn(1, 16, 48)
    t = torch.full((1, 16), 0.5)
    a, _ = m({"frames": x}, t, y=torch.tensor([0]))
    t2 = t.clone()
    t2[0, 3] = 0.9
    b, _ = m({"frames": x}, t2, y=torch.tensor([0]))
    assert (a["frames"][0, 3] - b["frames"][0, 3]).abs().max() > 1e-4


def test_return_blocks_and_stop_after(tiny_model):
    m = randomize_zero_init(tiny_model()).eval()
    x, t, y = torch.randn(2, 16, 48), torch.rand(2), torch.tensor([0, 1])
    full, hid = m({"frames": x}, t, y=y, return_blocks=(2, 5))
    assert set(hid) == {2, 5} and hid[2].shape == (2, 16, m.hidden)
    none, hid_stop = m({"frames": x}, t, y=y, return_blocks=(2,), stop_after=2)
    assert none is None
    torch.testing.assert_close(hid_stop[2], hid[2])


def test_action_group_tokens(tiny_model):
    m = randomize_zero_init(tiny_model(action_dim=7, action_horizon=5, cond_dim=8, num_classes=0)).eval()
    assert m.num_tokens == 21 and m.group_slices()["actions"] == slice(16, 21)
    out, _ = m(
        {"frames": torch.randn(2, 16, 48), "actions": torch.randn(2, 5, 7)},
        torch.rand(2, 21),
        cond=torch.randn(2, 8),
    )
    assert out["actions"].shape == (2, 5, 7)


def test_bad_inputs_name_the_problem(tiny_model):
    m = tiny_model()
    with pytest.raises(ConfigError, match="token group 'frames' has shape"):
        m({"frames": torch.randn(2, 15, 48)}, torch.rand(2), y=torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="class-conditional"):
        m({"frames": torch.randn(2, 16, 48)}, torch.rand(2))
    with pytest.raises(ConfigError, match="not divisible"):
        DiT(ModelConfig(image_size=30, patch=4))
    with pytest.raises(ConfigError, match="unknown model size"):
        DiT(ModelConfig(size="XXL"))


def test_compiled_model_returns_the_asked_blocks_for_each_call():
    """compile_model keeps integers static: with automatic dynamic integers a second call with other
    return_blocks / stop_after got an empty hidden-state dict (the Self-Flow teacher's KeyError)."""
    from worldflow.model.dit import DiT, ModelConfig
    from worldflow.objectives.common import fix_layout, noised, prepare
    from worldflow.train import compile_model

    torch.manual_seed(0)
    m = DiT(ModelConfig(size="debug", image_size=16, patch=4, num_classes=10))
    p = prepare(m, {"x": torch.randn(2, 3, 16, 16), "y": torch.randint(0, 10, (2,))}, 0.0)
    tau = fix_layout(torch.rand(2, 1).expand(2, m.num_tokens), p)
    tokens = noised(m, p, tau)
    compiled = compile_model(m, backend="eager")  # dynamo's graph capture is what matters, not the backend
    with torch.no_grad():
        _, first = compiled(tokens, tau, y=p.y, return_blocks=(2,))
        out, second = compiled(tokens, tau, y=p.y, return_blocks=(4,), stop_after=4)
        _, eager = m(tokens, tau, y=p.y, return_blocks=(4,), stop_after=4)
    assert list(first) == [2] and list(second) == [4] and out is None
    torch.testing.assert_close(second[4], eager[4])
