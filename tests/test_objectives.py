import copy

import pytest
import torch

from tests.conftest import randomize_zero_init
from worldflow.encoders import ConvEncoder, load_encoder, save_encoder
from worldflow.errors import CheckpointError, ConfigError
from worldflow.objectives import build_objective
from worldflow.objectives.common import prepare
from worldflow.objectives.selfflow import SelfFlow, SelfFlowConfig, separation_mask, token_mask


def batch_for(model, b=4):
    return {"x": torch.randn(b, *model.cfg.sample_shape), "y": torch.arange(b) % model.cfg.num_classes}


def test_dual_timestep_statistics(tiny_model):
    torch.manual_seed(0)
    m = tiny_model()
    obj = SelfFlow(SelfFlowConfig(), m)
    p = prepare(m, {"x": torch.randn(20_000, 3, 16, 16), "y": torch.zeros(20_000, dtype=torch.long)}, 0.0)
    tau, tau_teacher, mask = obj.timesteps(m, p)
    assert abs(mask.float().mean().item() - 0.25) < 0.005  # image ratio 0.25
    # every token's marginal timestep is uniform on [0, 1]
    for col in (0, 7, 15):
        assert abs(tau[:, col].mean() - 0.5) < 0.01 and abs(tau[:, col].var() - 1 / 12) < 0.004
    # never sorted: the masked group is the noisier one about half the time
    has_both = mask.any(1) & (~mask).any(1)
    s_val = tau[mask].new_tensor([tau[i][mask[i]][0] for i in torch.nonzero(has_both)[:4000, 0].tolist()])
    t_val = tau.new_tensor([tau[i][~mask[i]][0] for i in torch.nonzero(has_both)[:4000, 0].tolist()])
    assert abs((s_val > t_val).float().mean().item() - 0.5) < 0.03
    # the teacher sees min(t, s) on every token
    expected = tau.amin(1, keepdim=True).expand_as(tau)
    assert torch.equal(tau_teacher[has_both], expected[has_both])


def test_video_mask_ratio_and_exact_count(tiny_model):
    torch.manual_seed(0)
    m = tiny_model(frames=4, tubelet=2)
    assert abs(token_mask(m, SelfFlowConfig(), 5000, "cpu").float().mean() - 0.10) < 0.005
    exact = token_mask(m, SelfFlowConfig(exact_count=True), 100, "cpu")
    assert (exact.sum(1) == round(0.10 * m.num_tokens)).all()


class SpyTeacher(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.calls = []

    def forward(self, tokens, t, **kw):
        self.calls.append((t.clone(), kw))
        return self.inner(tokens, t, **kw)


def test_teacher_gets_min_timestep_no_gradient_and_stops_at_block_k(tiny_model):
    m = randomize_zero_init(tiny_model())
    teacher = SpyTeacher(copy.deepcopy(m).requires_grad_(True))
    obj = SelfFlow(SelfFlowConfig(student_block=2, teacher_block=4), m)
    torch.manual_seed(1)
    loss, metrics = obj(m, teacher, batch_for(m, 8))
    loss.backward()
    ((t_teacher, kw),) = teacher.calls
    assert kw["stop_after"] == 4 and kw["return_blocks"] == (4,)
    assert (t_teacher == t_teacher[:, :1]).all()  # one timestep per sample
    torch.manual_seed(1)
    p = prepare(m, batch_for(m, 8), 0.1)
    tau, _, _ = obj.timesteps(m, p)
    assert torch.equal(t_teacher, tau.amin(1, keepdim=True).expand_as(tau))
    assert all(q.grad is None for q in teacher.parameters())
    assert obj.head.net[0].weight.grad is not None and m.blocks[0].attn.qkv.weight.grad is not None
    assert metrics["loss_rep"] > 0 and loss.item() == pytest.approx(
        metrics["loss_flow"] + 0.8 * metrics["loss_rep"], rel=1e-5
    )


def test_ablations_change_only_their_part(tiny_model):
    m = tiny_model()
    p = prepare(m, batch_for(m, 2000), 0.0)
    torch.manual_seed(0)
    tau, tt, mask = SelfFlow(SelfFlowConfig(dual_timesteps=False), m).timesteps(m, p)
    assert not mask.any() and torch.equal(tau, tt)  # t = s: one timestep, teacher at the same one
    torch.manual_seed(0)
    tau, tt, mask = SelfFlow(SelfFlowConfig(teacher_timesteps="student"), m).timesteps(m, p)
    assert mask.any() and torch.equal(tau, tt)
    assert SelfFlow(SelfFlowConfig(rep_loss=False), m).needs_teacher is False
    with pytest.raises(ConfigError, match="vanilla"):
        SelfFlow(SelfFlowConfig(rep_loss=False, dual_timesteps=False), m)


def test_attention_separation_blocks_cross_group_only():
    mask = torch.tensor([[True, False, False, True]])
    fixed = torch.tensor([[False, False, True, False]])
    allowed = separation_mask(mask, fixed)[0, 0]
    expected = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1], [1, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def test_clean_and_absent_tokens(tiny_model):
    """World-model layout: clean tokens at t = 0, absent at t = 1, neither in the flow loss."""
    m = tiny_model()
    b = batch_for(m, 3)
    b["clean"] = torch.zeros(3, 16, dtype=torch.bool)
    b["clean"][:, :4] = True
    b["absent"] = torch.zeros(3, 16, dtype=torch.bool)
    b["absent"][:, -4:] = True
    obj = SelfFlow(SelfFlowConfig(), m)
    p = prepare(m, b, 0.0)
    tau, tt, _ = obj.timesteps(m, p)
    assert (tau[:, :4] == 0).all() and (tt[:, :4] == 0).all()
    assert (tau[:, -4:] == 1).all() and (tt[:, -4:] == 1).all()
    assert torch.equal(p.weight[0], torch.tensor([0.0] * 4 + [1.0] * 8 + [0.0] * 4))


def test_x_prediction_loss_is_zero_for_the_clean_tokens_at_every_t(tiny_model):
    from worldflow import flow
    from worldflow.objectives.common import flow_loss, noised

    mx, mv = tiny_model(prediction="x"), tiny_model(prediction="v")
    p = prepare(mx, batch_for(mx, 3), 0.0)
    tau = torch.rand(3, 16)
    tau[:, 0] = 0.01  # below JiT's clamp
    x_t = noised(mx, p, tau)
    perfect = {g: flow.to_velocity(p.x0[g], x_t[g], tau[:, s], "x") for g, s in mx.group_slices().items()}
    assert flow_loss(mx, perfect, p, tau)[0].item() < 1e-10
    # the v-loss of the same velocities against the unclamped target is not zero: the clamp is in both
    assert flow_loss(mv, perfect, p, tau)[0].item() > 1e-4


def test_vanilla_and_repa(tiny_model, tmp_path):
    m = randomize_zero_init(tiny_model())
    loss, metrics = build_objective({"name": "vanilla"}, m)(m, None, batch_for(m))
    assert loss.item() == pytest.approx(metrics["loss_frames"])
    path = save_encoder(ConvEncoder(width=8, dim=16, downs=2), tmp_path / "enc.safetensors")
    enc = load_encoder(path)
    assert not any(p.requires_grad for p in enc.parameters())
    repa = build_objective({"name": "repa", "encoder": str(path), "projector_dim": 32, "student_block": 2}, m)
    target = repa.target_features(m, torch.randn(2, 3, 16, 16))
    assert target.shape == (2, 16, 16)
    loss, metrics = repa(m, None, batch_for(m))
    assert loss.item() == pytest.approx(metrics["loss_flow"] + 0.5 * metrics["loss_rep"], rel=1e-5)
    assert not any(k.startswith("encoder") for k in repa.state_dict())  # frozen encoder is not checkpointed


def test_objective_config_errors(tiny_model, tmp_path):
    m = tiny_model()
    with pytest.raises(ConfigError, match="objective.gama"):
        build_objective({"name": "selfflow", "gama": 0.8}, m)
    with pytest.raises(ConfigError, match="unknown objective 'selflow'"):
        build_objective({"name": "selflow"}, m)
    with pytest.raises(ConfigError, match="teacher_block=9"):
        build_objective({"name": "selfflow", "teacher_block": 9}, m)
    with pytest.raises(CheckpointError, match="missing.safetensors does not exist"):
        build_objective({"name": "repa", "encoder": str(tmp_path / "missing.safetensors")}, m)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="bad.safetensors is not a readable"):
        build_objective({"name": "repa", "encoder": str(bad)}, m)
    with pytest.raises(ConfigError, match="sample shape"):
        build_objective({"name": "vanilla"}, m)(
            m, None, {"x": torch.randn(2, 3, 8, 8), "y": torch.zeros(2, dtype=torch.long)}
        )
