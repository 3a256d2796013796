import numpy as np
import pytest
import torch

from tests.conftest import randomize_zero_init
from worldflow.data.actions import ActionStats, abs2rel_gripper, rel2abs_gripper
from worldflow.data.cache import CacheWriter, EpisodeCache
from worldflow.data.windows import WindowDataset, split_episodes
from worldflow.errors import ConfigError, DataError
from worldflow.logger import read_metrics
from worldflow.model.dit import DiT, ModelConfig
from worldflow.objectives import build_objective
from worldflow.train import TrainConfig, collate, train
from worldflow.worldmodel.infer import predict
from worldflow.worldmodel.modes import WorldModelConfig, WorldModelObjective, layout_masks, validity_mask


def test_rel2abs_gripper_hand_made():
    # close at step 2, hold, open at step 5: starts open (opposite of the first command)
    rel = np.array([0.0, 0.05, 1.0, 0.0, 0.0, -1.0, 0.0])
    assert rel2abs_gripper(rel).tolist() == [1, 1, 0, 0, 0, 1, 1]
    # first command is "open": the gripper must have been closed before it
    assert rel2abs_gripper(np.array([0.0, -0.5, 0.0, 0.8])).tolist() == [0, 1, 1, 0]
    assert rel2abs_gripper(np.zeros(3)).tolist() == [1, 1, 1]  # no command: open
    assert rel2abs_gripper(np.array([0.09, -0.09])).tolist() == [1, 1]  # inside the ±0.1 dead band
    assert abs2rel_gripper(np.array([1, 1, 0, 0, 1])).tolist() == [0, 0, 1, 0, -1]


def test_percentile_normalisation_and_inverse():
    rng = np.random.default_rng(0)
    acts = np.concatenate([rng.normal(0, 0.02, (1000, 6)), rng.integers(0, 2, (1000, 1))], axis=1)
    acts[:, 5] = 0.3  # a constant dimension: q01 == q99
    acts[:, 4] = rng.normal(0.1, 1e-4, 1000)  # numerical noise around a constant (range under MIN_RANGE)
    stats = ActionStats.compute(acts)
    n = stats.normalize(acts)
    assert n[:, :4].min() == -1 and n[:, :4].max() == 1
    assert (n[:, 5] == 0).all() and (n[:, 4] == 0).all()  # constant dimensions set to 0, noise included
    assert np.allclose(stats.denormalize(n)[:, 4], 0.1, atol=5e-4)  # restored as the middle of the range
    assert np.array_equal(n[:, 6], acts[:, 6])  # gripper not normalised
    q = np.array(stats.q01), np.array(stats.q99)
    inside = ((acts[:, :4] > q[0][:4]) & (acts[:, :4] < q[1][:4])).all(1)
    back = stats.denormalize(n)
    np.testing.assert_allclose(back[inside][:, :4], acts[inside][:, :4], atol=1e-6)
    assert np.allclose(back[:, 5], 0.3)
    by_hand = 2 * (acts[0, 0] - stats.q01[0]) / (stats.q99[0] - stats.q01[0] + 1e-8) - 1
    assert n[0, 0] == pytest.approx(np.clip(by_hand, -1, 1), abs=1e-6)
    bad = acts.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="step 3, dimension 2"):
        ActionStats.compute(bad)


def make_cache(path, lengths=(5, 3, 6), size=8):
    w = CacheWriter(path, size, {"source": "test"})
    step = 0
    for e, t in enumerate(lengths):
        frames = np.zeros((t, size, size, 3), np.uint8)
        for i in range(t):
            frames[i] = (step + i) % 256  # the global step index, readable back from the pixels
        actions = np.zeros((t, 7), np.float32)
        actions[:, 0] = np.arange(step, step + t) / 100.0
        actions[:, 6] = 1.0
        w.add(
            frames, actions, np.arange(t) == t - 1, np.zeros((t, 8)), f"task {e}", np.full(512, e, np.float32)
        )
        step += t
    return EpisodeCache(w.finish())


def test_windows_never_cross_episodes_and_mask_padding(tmp_path):
    cache = make_cache(tmp_path / "c")
    ds = WindowDataset(cache, context=2, horizon=3, action_horizon=4)
    assert len(ds) == 4 + 2 + 5  # anchors 0..L-2 per episode
    item = ds[0]  # episode 0, t = 0: context repeats frame 0
    steps = ((item["x"][:, 0, 0, 0] + 1) * 127.5).round().long().tolist()
    assert steps == [0, 0, 1, 2, 3]
    item = ds[5]  # episode 1 (global steps 5..7), t = 1: futures 7 then padding
    steps = ((item["x"][:, 0, 0, 0] + 1) * 127.5).round().long().tolist()
    assert steps == [5, 6, 7, 7, 7]
    assert item["frame_valid"].tolist() == [True, True, True, False, False]
    assert item["action_valid"].tolist() == [True, True, False, False]
    assert torch.equal(item["cond"], torch.full((512,), 1.0))
    for i in range(len(ds)):
        raw = ((ds[i]["x"][:, 0, 0, 0] + 1) * 127.5).round().long()
        e = int(ds.index[i][0])
        start, length = cache.episodes[e]
        assert ((raw >= start) & (raw < start + length)).all()
    train_eps, val_eps = split_episodes(3, 1)
    assert train_eps == [0, 1] and val_eps == [2]
    with pytest.raises(DataError, match="too few"):
        split_episodes(3, 3)


def test_cache_is_atomic_and_checks_shapes(tmp_path):
    w = CacheWriter(tmp_path / "c", 8, {})
    with pytest.raises(DataError, match="episode 0: frames"):
        w.add(
            np.zeros((2, 9, 8, 3), np.uint8), np.zeros((2, 7)), [0, 1], np.zeros((2, 8)), "x", np.zeros(512)
        )
    w.abort()
    assert not (tmp_path / "c").exists() and not list(tmp_path.iterdir())
    with pytest.raises(DataError, match="not a complete episode cache"):
        EpisodeCache(tmp_path / "c")


def wm_model(**kw):
    torch.manual_seed(0)
    cfg = dict(
        size="debug", image_size=8, patch=4, frames=5, tubelet=1, cond_dim=512, action_dim=7, action_horizon=4
    )
    return DiT(ModelConfig(**{**cfg, **kw}))


def test_mode_conditioning_patterns():
    m = wm_model()
    clean, absent = layout_masks(m, 2, ["policy", "forward", "inverse", "joint", "video"])
    ctx, fut, act = slice(0, 8), slice(8, 20), slice(20, 24)  # 4 tokens per frame
    expect = {  # (future clean, future absent, actions clean, actions absent)
        0: (False, True, False, False),
        1: (False, False, True, False),
        2: (True, False, False, False),
        3: (False, False, False, False),
        4: (False, False, False, True),
    }
    for row, (fc, fa, ac, aa) in expect.items():
        assert clean[row, ctx].all() and not absent[row, ctx].any()
        assert (clean[row, fut] == fc).all() and (absent[row, fut] == fa).all()
        assert (clean[row, act] == ac).all() and (absent[row, act] == aa).all()
    valid = validity_mask(
        m, torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool), torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    )
    assert valid[0, 16:20].sum() == 0 and valid[0, :16].all() and valid[0, 20:].tolist() == [1, 1, 0, 0]
    with pytest.raises(ConfigError, match="unknown world-model mode"):
        WorldModelObjective(WorldModelConfig(mode_weights={"dream": 1.0}), None)


def test_forward_dynamics_uses_actions():
    m = randomize_zero_init(wm_model()).eval()
    ctx, cond = torch.randn(1, 2, 3, 8, 8), torch.randn(1, 512)
    a = predict(m, ctx, cond, "forward", actions=torch.zeros(1, 4, 7), steps=4, seed=0)["frames"]
    b = predict(m, ctx, cond, "forward", actions=torch.ones(1, 4, 7), steps=4, seed=0)["frames"]
    again = predict(m, ctx, cond, "forward", actions=torch.zeros(1, 4, 7), steps=4, seed=0)["frames"]
    assert torch.equal(a, again)
    assert (a - b).abs().mean() > 1e-3
    with pytest.raises(ConfigError, match="pass actions"):
        predict(m, ctx, cond, "forward")


@pytest.mark.parametrize("objective,prediction", [("vanilla", "v"), ("selfflow", "v"), ("selfflow", "x")])
def test_tiny_finetune_lowers_frame_and_action_losses(tmp_path, objective, prediction):
    cache = make_cache(tmp_path / "c", lengths=(12, 12, 12, 12))
    ds = WindowDataset(cache, context=2, horizon=3, action_horizon=4)
    m = wm_model(prediction=prediction)
    obj = WorldModelObjective(WorldModelConfig(), build_objective({"name": objective}, m))
    batch = collate([ds[i] for i in range(4)])
    fracs = {k: v for k, v in obj(m, m, batch)[1].items() if k.startswith("frac_")}
    assert set(fracs) == {f"frac_{mode}" for mode in obj.modes} and len(fracs) > 1
    assert sum(fracs.values()) == pytest.approx(1.0)  # every window of the batch gets one mode
    cfg = TrainConfig(steps=80, batch_size=16, lr=1e-3, ema_decay=0.9, log_every=1)
    train(m, obj, ds, cfg, tmp_path / "run", {})
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    for key in ("loss_frames", "loss_actions"):
        first = np.mean([r[key] for r in rows[:10]])
        last = np.mean([r[key] for r in rows[-10:]])
        assert last < 0.7 * first, (key, first, last)


def test_frame_scores_by_hand_and_the_mean_frame_of_the_training_episodes(tmp_path):
    from worldflow.worldmodel.openloop import frame_scores, mean_frame

    last = -torch.ones(1, 3, 4, 4)
    future = -torch.ones(1, 2, 3, 4, 4)
    future[0, 0, :, 0, 0] = 1.0  # one pixel of 32 moves, at step 0; nothing moves at step 1
    valid = torch.ones(1, 2, dtype=torch.bool)
    copy = frame_scores(last[:, None].expand_as(future), future, last, valid)
    assert copy["moving_fraction"] == pytest.approx(1 / 32)
    assert copy["moving_psnr_per_step"][0] == pytest.approx(0.0, abs=1e-5)  # error 1 (of [0, 1]) there
    assert copy["moving_psnr_per_step"][1] is None and copy["moving_psnr"] == pytest.approx(0.0, abs=1e-5)
    assert copy["psnr_per_step"][0] == pytest.approx(10 * np.log10(16), abs=1e-4)  # 1 pixel of 16 off by 1
    assert copy["psnr_per_step"][1] == pytest.approx(100.0)  # exact (MSE clamped at 1e-10)
    half = future.clone()
    half[0, 0, :, 0, 0] = 0.0  # halfway: error 0.5 on the moving pixel
    assert frame_scores(half, future, last, valid)["moving_psnr"] == pytest.approx(10 * np.log10(4), abs=1e-4)
    invalid = frame_scores(last[:, None].expand_as(future), future, last, torch.tensor([[False, True]]))
    assert invalid["moving_psnr"] is None and invalid["moving_fraction"] == 0.0  # padding is not scored

    cache = make_cache(tmp_path / "c", lengths=(3, 3, 4))  # pixel value = global step 0..9
    held_out = WindowDataset(cache, context=2, horizon=2, action_horizon=2, episodes=[2])
    assert mean_frame(held_out).shape == (3, 8, 8)
    torch.testing.assert_close(mean_frame(held_out), torch.full((3, 8, 8), 2.5 / 127.5 - 1.0))  # steps 0..5


def test_action_following_is_a_paired_gain_by_hand():
    from worldflow.worldmodel.openloop import action_following

    last = -torch.ones(3, 3, 4, 4)
    future = -torch.ones(3, 1, 3, 4, 4)
    future[:, 0, :, 0, 0] = 1.0  # one moving pixel per window
    valid = torch.ones(3, 1, dtype=torch.bool)
    true_guess, other_guess = future.clone(), future.clone()
    true_guess[:, 0, :, 0, 0] = 0.9  # error 0.1 with the window's own actions
    other_guess[:, 0, :, 0, 0] = torch.tensor([0.0, 0.0, 0.95])[:, None]  # 1.0, 1.0, 0.05 with another's
    out = action_following(true_guess, other_guess, future, last, valid)
    gains = 10 * np.log10(np.array([1.0, 1.0, 0.0025]) / 0.01)  # +20, +20, -6.02 dB
    assert out["windows"] == 3 and out["windows_true_better"] == pytest.approx(2 / 3)
    assert out["moving_gain_db"] == pytest.approx(gains.mean(), abs=1e-3)
    half = 1.96 * gains.std(ddof=1) / np.sqrt(3)
    assert out["moving_gain_db_ci95"] == pytest.approx([gains.mean() - half, gains.mean() + half], abs=1e-3)
    # over whole frames the same errors are spread over 48 numbers: the ratios, and so the gains, are equal
    assert out["frame_gain_db"] == pytest.approx(gains.mean(), abs=1e-3)
    # a model that ignores the actions gains nothing; a window where nothing moves is left out
    still = future.clone()
    still[2] = -1.0
    same = action_following(true_guess, true_guess, still, last, valid)
    assert (
        same["windows"] == 2
        and same["moving_gain_db"] == pytest.approx(0.0)
        and same["windows_true_better"] == 0
    )


def test_denoising_mse_scores_the_future_tokens_only():
    from worldflow.worldmodel.openloop import denoising_mse

    m = wm_model(prediction="x").eval()  # zero-initialised output layer: x̂0 = 0 at every t
    x = torch.rand(2, 5, 3, 8, 8) * 2 - 1
    batch = {"x": x, "actions": torch.zeros(2, 4, 7), "cond": torch.zeros(2, 512),
             "frame_valid": torch.ones(2, 5, dtype=torch.bool), "action_valid": torch.ones(2, 4, dtype=torch.bool)}  # fmt: skip
    batch["frame_valid"][1, 4] = False  # a padded frame is not scored
    future = x[:, 2:]
    out = denoising_mse(m, batch, 2, {"truth": future, "zeros": torch.zeros_like(future)}, seed=0)
    assert out["truth"] == 0.0
    expected = float(torch.cat([future[0].flatten(), future[1, :2].flatten()]).pow(2).mean())
    assert out["zeros"] == pytest.approx(expected, rel=1e-5)
    for t in ("model_t1", "model_t0.5", "model_t0.1"):
        assert out[t] == pytest.approx(expected, rel=1e-4)


def test_image_sensitivity_is_zero_only_for_a_policy_blind_to_frames():
    from worldflow.worldmodel.openloop import OpenLoopConfig, image_sensitivity

    m = randomize_zero_init(wm_model()).eval()
    ctx, cond = torch.rand(3, 2, 3, 8, 8) * 2 - 1, torch.randn(3, 512)
    truth = torch.randn(3, 4, 7)
    cfg = OpenLoopConfig(steps=3)
    pred = predict(m, ctx, cond, "policy", steps=3, seed=cfg.seed)["actions"]
    assert image_sensitivity(m, ctx, cond, truth, pred, cfg, 7) > 0.01
    with torch.no_grad():
        m.embed_in["frames"].weight.zero_()  # frame tokens carry only bias + position: the image is unseen
    pred = predict(m, ctx, cond, "policy", steps=3, seed=cfg.seed)["actions"]
    assert image_sensitivity(m, ctx, cond, truth, pred, cfg, 7) == pytest.approx(0.0, abs=1e-6)
    # scaled by how far apart the true chunks are
    m2 = randomize_zero_init(wm_model()).eval()
    pred = predict(m2, ctx, cond, "policy", steps=3, seed=cfg.seed)["actions"]
    a = image_sensitivity(m2, ctx, cond, truth, pred, cfg, 7)
    assert image_sensitivity(m2, ctx, cond, 2 * truth, pred, cfg, 7) == pytest.approx(a / 2, rel=1e-5)
    assert image_sensitivity(m2, ctx[:1], cond[:1], truth[:1], pred[:1], cfg, 7) is None


def test_noise_sensitivity_sees_a_policy_that_follows_its_seed():
    from worldflow.worldmodel.openloop import OpenLoopConfig, image_sensitivity, noise_sensitivity

    ctx, cond = torch.rand(3, 2, 3, 8, 8) * 2 - 1, torch.randn(3, 512)
    truth = torch.randn(3, 4, 7)
    cfg = OpenLoopConfig(steps=3)
    # zero-initialised output of a velocity predictor: velocity 0, so every chunk is its own starting noise
    m = wm_model(prediction="v").eval()
    pred = predict(m, ctx, cond, "policy", steps=3, seed=cfg.seed)["actions"]
    truth_gap = (truth.roll(1, 0) - truth).abs().mean()
    # two standard normal draws differ by 2 / sqrt(pi) on average; 84 numbers, so a loose tolerance
    expected = 2 / np.pi**0.5 / float(truth_gap)
    assert noise_sensitivity(m, ctx, cond, truth, pred, cfg, 7) == pytest.approx(expected, rel=0.3)
    assert image_sensitivity(m, ctx, cond, truth, pred, cfg, 7) == pytest.approx(0.0, abs=1e-6)
    assert noise_sensitivity(m, ctx[:1], cond[:1], truth[:1], pred[:1], cfg, 7) is None


def test_isolate_fixed_blocks_only_fixed_to_noised_attention():
    # With isolate_fixed, changing the noised tokens (actions in policy mode) leaves every fixed token's
    # hidden state unchanged, while noised tokens still see the context; without it, context tokens change.
    ctx_frames = torch.randn(1, 5, 3, 8, 8)
    clean, absent = layout_masks(wm_model(), 2, ["policy"], "cpu")
    fixed = clean | absent
    tau = torch.where(clean, 0.0, torch.where(absent, 1.0, 0.5))
    for isolate in (True, False):
        m = randomize_zero_init(wm_model(isolate_fixed=isolate)).eval()
        frames = m.patchify(ctx_frames)
        hid = []
        for acts in (torch.zeros(1, 4, 7), torch.ones(1, 4, 7)):
            _, h = m(
                {"frames": frames, "actions": acts},
                tau,
                cond=torch.ones(1, 512),
                return_blocks=(6,),
                fixed=fixed,
            )
            hid.append(h[6][0])
        moved = (hid[0] - hid[1]).abs().amax(-1)
        assert (moved[fixed[0]].max() < 1e-6) == isolate
        assert moved[~fixed[0]].min() > 1e-4  # the noised tokens themselves always change
    # noised tokens still attend to the context under the mask
    m = randomize_zero_init(wm_model(isolate_fixed=True)).eval()
    a = predict(m, ctx_frames[:, :2], torch.ones(1, 512), "policy", steps=3, seed=0)["actions"]
    b = predict(m, -ctx_frames[:, :2], torch.ones(1, 512), "policy", steps=3, seed=0)["actions"]
    assert (a - b).abs().mean() > 1e-3


@pytest.mark.parametrize(
    "mode,prediction", [("policy", "v"), ("forward", "v"), ("inverse", "x"), ("joint", "x")]
)
def test_kv_cache_equals_full_forward(mode, prediction):
    m = randomize_zero_init(wm_model(isolate_fixed=True, prediction=prediction)).eval()
    ctx, cond = torch.randn(2, 2, 3, 8, 8), torch.randn(2, 512)
    kw = dict(actions=torch.randn(2, 4, 7), future_frames=torch.randn(2, 3, 3, 8, 8).clamp(-1, 1))
    full = predict(m, ctx, cond, mode, steps=4, seed=3, kv_cache=False, **kw)
    cached = predict(m, ctx, cond, mode, steps=4, seed=3, kv_cache=True, **kw)
    assert full.keys() == cached.keys() and full
    for g in full:
        torch.testing.assert_close(cached[g], full[g], atol=1e-5, rtol=1e-4)
    plain = randomize_zero_init(wm_model()).eval()
    with pytest.raises(ConfigError, match="isolate_fixed"):
        predict(plain, ctx, cond, mode, steps=2, kv_cache=True, **kw)


def test_windows_carry_proprioception_and_terminate(tmp_path):
    w = CacheWriter(tmp_path / "c", 8, {"source": "test"})
    for e, t in enumerate((5, 3)):
        proprio = np.zeros((t, 8), np.float32)
        proprio[:, 2] = np.linspace(0.5, 1.0, t) + e  # a height that changes every step
        terminate = np.arange(t) == t - 1
        w.add(np.zeros((t, 8, 8, 3), np.uint8), np.zeros((t, 7)), terminate, proprio, "x", np.full(512, e))
    cache = EpisodeCache(w.finish())
    ds = WindowDataset(cache, context=2, horizon=3, action_horizon=4, proprio=True, terminate=True)
    item = ds[2]  # episode 0, t = 2: actions of steps 2, 3, 4, then one padded step
    assert item["actions"].shape == (4, 8) and item["cond"].shape == (512 + 8,)
    assert item["actions"][:, 7].tolist() == [-1.0, -1.0, 1.0, -1.0]  # +1 on the step that ends the task
    z = cache.proprio_stats.normalize(cache.proprio[2])
    np.testing.assert_allclose(item["cond"][512:].numpy(), z, atol=1e-6)
    assert item["cond"][512 + 2] != ds[3]["cond"][512 + 2]  # the current step's proprioception
    assert torch.equal(item["cond"][:512], torch.zeros(512))
    plain = WindowDataset(cache, context=2, horizon=3, action_horizon=4)
    assert plain[2]["actions"].shape == (4, 7) and plain[2]["cond"].shape == (512,)
    # classifier-free-guidance dropout zeroes the instruction only, never the proprioception
    seen = {}

    class Capture(torch.nn.Module):
        def forward(self, model, teacher, batch):
            seen.update(batch)
            return torch.zeros(()), {}

    wm_cfg = WorldModelConfig(proprio=True, terminate=True, cond_dropout=1.0)
    m = wm_model(cond_dim=520, action_dim=8)
    batch = collate([ds[i] for i in range(4)])
    batch["cond"][:, :512] = 1.0
    WorldModelObjective(wm_cfg, Capture(), proprio_dim=8)(m, m, batch)
    assert torch.equal(seen["cond"][:, :512], torch.zeros(4, 512))
    assert torch.equal(seen["cond"][:, 512:], batch["cond"][:, 512:])
    cfg = wm_cfg.model_config(ModelConfig(size="debug", patch=4, tubelet=1), 8, 512, proprio_dim=8)
    assert cfg.cond_dim == 520 and cfg.action_dim == 8
    with pytest.raises(ConfigError, match="no proprioception"):
        wm_cfg.model_config(ModelConfig(size="debug"), 8, 512, proprio_dim=0)


def test_mirrored_windows_flip_frames_and_the_lateral_signs(tmp_path):
    from worldflow.data.cache import CacheWriter, EpisodeCache
    from worldflow.data.windows import WindowDataset
    from worldflow.errors import ConfigError
    from worldflow.worldmodel.robot import RobotConfig

    rng = np.random.default_rng(0)
    writer = CacheWriter(tmp_path / "c", 8, {})
    frames = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    actions = rng.uniform(-0.05, 0.05, (5, 7)).astype(np.float32)
    actions[:, 3:6] = rng.uniform(-0.2, 0.2, (5, 3))
    actions[:, 6] = [1, 1, 0, 0, 1]
    proprio = rng.uniform(-1, 1, (5, 8)).astype(np.float32)
    writer.add(frames, actions, np.zeros(5, bool), proprio, "pick", np.zeros(4, np.float32))
    cache = EpisodeCache(writer.finish())
    robot = RobotConfig()
    signs = (robot.mirror_action_signs, robot.mirror_proprio_signs)
    plain = WindowDataset(cache, 2, 2, 3, proprio=True)
    both = WindowDataset(cache, 2, 2, 3, proprio=True, mirror=signs)
    assert len(both) == 2 * len(plain) == 8
    a, m = plain[1], both[len(plain) + 1]  # window 1 and its mirror image
    assert torch.equal(m["x"], a["x"].flip(-1))  # frames flipped left-right
    stats = cache.stats
    want = stats.normalize(actions[1:4] * np.array([1, -1, 1, -1, 1, -1, 1], np.float32))
    np.testing.assert_allclose(m["actions"].numpy(), want, atol=1e-6)  # y, rx, rz change sign
    mirrored_p = proprio[1] * np.array([1, -1, 1, -1, 1, -1, 1, 1], np.float32)  # y, qx, qz change sign
    np.testing.assert_allclose(m["cond"][4:].numpy(), cache.proprio_stats.normalize(mirrored_p), atol=1e-6)
    assert torch.equal(both[1]["x"], a["x"])  # the first half is the data as it is
    with pytest.raises(ConfigError, match="mirror_action_signs has 3 signs"):
        WindowDataset(cache, 2, 2, 3, mirror=([1, -1, 1], robot.mirror_proprio_signs))


def test_keyframe_repeats_pick_the_steps_only_the_image_decides(tmp_path):
    from worldflow.data.windows import keyframe_repeats, window_index

    # Two instructions, 6 episodes each, the arm's state the same at every step of every episode.
    # "open": the same actions in every episode (the state decides them). "reach": steps 0-2 go to a side
    # that differs per episode (left or right: only the image could tell), steps 3-7 are the same again.
    rng = np.random.default_rng(0)
    writer = CacheWriter(tmp_path / "c", 8, {})
    for instruction in ("open", "reach"):
        for e in range(6):
            actions = np.tile(np.array([0.02, 0.0, -0.01, 0, 0, 0, 0], np.float32), (8, 1))
            if instruction == "reach":
                actions[:3, 1] = 0.05 if e % 2 else -0.05
            proprio = np.tile(np.linspace(-1, 1, 8, dtype=np.float32)[:, None], (1, 8))
            frames = rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
            writer.add(frames, actions, np.zeros(8, bool), proprio, instruction, np.zeros(4, np.float32))
    cache = EpisodeCache(writer.finish())
    episodes = list(range(12))
    index = window_index(cache, episodes)
    assert index.shape == (12 * 7, 2) and index[7].tolist() == [1, 0]
    repeats, residual = keyframe_repeats(cache, episodes, action_horizon=2, repeat=4, neighbours=4)
    reach = np.array(cache.meta["instructions"])[index[:, 0]] == "reach"
    deciding = reach & (index[:, 1] <= 2)  # chunks [t, t+1] that contain a side step
    assert residual[deciding].min() > 10 * residual[~deciding].max()
    assert (repeats[deciding] >= 4).all() and repeats.max() == 5  # near the 90th percentile: 1 + repeat
    assert (repeats[~deciding] == 1).all()
    dataset = WindowDataset(cache, 2, 2, 2, episodes, repeats=repeats)
    assert len(dataset) == 12 * 7 + repeats.sum() - len(repeats)
    seen = [tuple(row) for row in dataset.index.tolist()]
    assert seen.count((7, 0)) == 5 and seen.count((0, 0)) == 1  # a deciding window, an "open" one
    with pytest.raises(ConfigError, match="keyframe_repeat=-1"):
        keyframe_repeats(cache, episodes, 2, -1)
    with pytest.raises(ConfigError, match="expected 84 counts >= 1"):
        WindowDataset(cache, 2, 2, 2, episodes, repeats=np.zeros(84, np.int64))


def test_keypoints_read_where_the_score_peaks_and_keep_the_cache_exact():
    from worldflow.model.dit import Keypoints

    kp = Keypoints(hidden=8, keypoints=1, grid=4)
    with torch.no_grad():  # score = GELU(h)[0]: a token whose feature 0 is large wins the softmax
        kp.score[0].weight.copy_(torch.eye(8))
        kp.score[0].bias.zero_()
        kp.score[2].weight.copy_(torch.eye(8)[:1])
        kp.score[2].bias.zero_()
    h = torch.zeros(2, 16, 8)
    h[0, 2 * 4 + 3, 0] = 50.0  # row 2, column 3 of a 4 x 4 grid
    h[1, 1 * 4 + 0, 0] = 50.0  # row 1, column 0
    xy = kp.coordinates(h)
    torch.testing.assert_close(xy[:, 0], torch.tensor([[1 / 3, 1.0], [-1 / 3, -1.0]]), atol=1e-4, rtol=0)
    assert kp(h).shape == (2, 8)
    h[0, 0, 0] = 49.0  # a runner-up: the expectation moves towards it unless the softmax is sharp
    soft = kp.coordinates(h)[0, 0].detach()
    with torch.no_grad():  # larger scores make the softmax sharper
        kp.score[2].weight.mul_(8.0)
    sharp = kp.coordinates(h)[0, 0].detach()
    # the winner is column 3 (1.0), the runner-up column 0 (-1.0)
    assert float(soft[1]) < 0.5 and float(sharp[1]) == pytest.approx(1.0, abs=1e-2)

    m = randomize_zero_init(wm_model(isolate_fixed=True, keypoints=3)).eval()
    ctx, cond = torch.randn(2, 2, 3, 8, 8), torch.randn(2, 512)
    full = predict(m, ctx, cond, "policy", steps=3, seed=1, kv_cache=False)["actions"]
    cached = predict(m, ctx, cond, "policy", steps=3, seed=1, kv_cache=True)["actions"]
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="only the world model"):
        DiT(ModelConfig(size="debug", image_size=8, patch=4, keypoints=2))
    with pytest.raises(ConfigError, match="model.tubelet=4 > worldmodel.context=2"):
        WorldModelConfig().model_config(ModelConfig(size="debug", tubelet=4, keypoints=2), 8, 512)


@pytest.mark.parametrize("tubelet,frames", [(1, 5), (2, 6)])
def test_residual_model_at_zero_init_copies_the_last_context_frame(tubelet, frames):
    m = wm_model(tubelet=tubelet, frames=frames, residual_from=2).eval()  # zero output layer
    ctx, cond = torch.randn(2, 2, 3, 8, 8).clamp(-1, 1), torch.randn(2, 512)
    out = predict(m, ctx, cond, "forward", actions=torch.randn(2, 4, 7), steps=3, seed=0)["frames"]
    assert out.shape == (2, frames - 2, 3, 8, 8)
    torch.testing.assert_close(out, ctx[:, -1:].expand_as(out), atol=1e-5, rtol=0)
    # without the residual the same zero output predicts black frames, not the last one
    plain = wm_model(tubelet=tubelet, frames=frames).eval()
    out = predict(plain, ctx, cond, "forward", actions=torch.randn(2, 4, 7), steps=3, seed=0)["frames"]
    assert out.abs().max() < 1e-5


@pytest.mark.parametrize("mode", ["forward", "joint", "video"])
def test_residual_model_kv_cache_equals_full_forward(mode):
    m = randomize_zero_init(wm_model(tubelet=2, frames=6, residual_from=2, isolate_fixed=True)).eval()
    ctx, cond = torch.randn(2, 2, 3, 8, 8), torch.randn(2, 512)
    kw = dict(actions=torch.randn(2, 4, 7))
    full = predict(m, ctx, cond, mode, steps=4, seed=3, kv_cache=False, **kw)
    cached = predict(m, ctx, cond, mode, steps=4, seed=3, kv_cache=True, **kw)
    torch.testing.assert_close(cached["frames"], full["frames"], atol=1e-5, rtol=1e-4)


def test_residual_needs_x_prediction_and_whole_context_tubelets():
    with pytest.raises(ConfigError, match="model.prediction=x"):
        wm_model(residual_from=2, prediction="v")
    with pytest.raises(ConfigError, match="multiple of model.tubelet=2"):
        wm_model(tubelet=2, frames=6, residual_from=3)
    base = ModelConfig(size="debug", patch=4, tubelet=2)
    assert WorldModelConfig().model_config(base, 8, 512).residual_from == 2  # on by default
    assert WorldModelConfig(residual=False).model_config(base, 8, 512).residual_from == 0


def test_checkpoint_robot_is_typed_and_tolerates_old_keys():
    from dataclasses import asdict

    from worldflow.worldmodel.bundle import robot_config
    from worldflow.worldmodel.robot import RobotConfig

    rec = asdict(RobotConfig())
    rec["data"]["crop"] = [0.0, 0.25, 0.7, 0.5]
    rec["env_suite"] = "cpu"  # a field RobotConfig has since dropped
    del rec["proprio_from_env"]  # a field older checkpoints lack
    robot = robot_config(rec)
    assert isinstance(robot, RobotConfig) and robot.data.crop == [0.0, 0.25, 0.7, 0.5]
    assert robot.proprio_from_env == "rt1" and not hasattr(robot, "env_suite")


def test_windows_with_a_frame_gap_space_context_and_future_frames(tmp_path):
    cache = make_cache(tmp_path / "c")  # episodes of 5, 3, 6 steps (global steps 0..4, 5..7, 8..13)
    ds = WindowDataset(cache, context=2, horizon=2, action_horizon=4, frame_gap=2)
    assert len(ds) == 4 + 2 + 5  # the same anchors as without a gap
    item = ds[6 + 2]  # episode 2, t = 2: frames at t - 2, t, t + 2, t + 4 (past the end: padding)
    steps = ((item["x"][:, 0, 0, 0] + 1) * 127.5).round().long().tolist()
    assert steps == [8, 10, 12, 13]
    assert item["frame_valid"].tolist() == [True, True, True, False]
    # actions stay every step: t .. t + 3
    assert (item["actions"].shape[0], item["action_valid"].tolist()) == (4, [True, True, True, True])
    item = ds[6]  # episode 2, t = 0: the context before the first frame repeats it
    assert ((item["x"][:, 0, 0, 0] + 1) * 127.5).round().long().tolist() == [8, 8, 10, 12]
    with pytest.raises(ConfigError, match="frame_gap=0"):
        WindowDataset(cache, context=2, horizon=2, action_horizon=4, frame_gap=0)
    with pytest.raises(ConfigError, match="worldmodel.frame_gap=0"):
        WorldModelConfig(frame_gap=0).validate()
    with pytest.raises(ConfigError, match="worldmodel.context_dropout=1.5"):
        WorldModelConfig(context_dropout=1.5).validate()


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_context_dropout_replaces_earlier_context_frames_by_the_last(p):
    seen = {}

    def inner(model, teacher, batch):
        seen.update(batch)
        return torch.zeros(()), {}

    m = wm_model(frames=5)  # 3 context frames, 2 future
    cfg = WorldModelConfig(context=3, horizon=2, action_horizon=4, context_dropout=p)
    batch = {
        "x": torch.randn(6, 5, 3, 8, 8),
        "actions": torch.zeros(6, 4, 7),
        "cond": torch.zeros(6, 512),
        "frame_valid": torch.ones(6, 5, dtype=torch.bool),
        "action_valid": torch.ones(6, 4, dtype=torch.bool),
    }
    original = batch["x"].clone()
    WorldModelObjective(cfg, inner)(m, None, batch)
    x = seen["x"]
    assert torch.equal(batch["x"], original)  # the caller's batch is not changed in place
    assert torch.equal(x[:, 2:], original[:, 2:])  # the last context frame and the future stay
    if p == 1.0:
        assert torch.equal(x[:, 0], original[:, 2]) and torch.equal(x[:, 1], original[:, 2])
    else:
        assert torch.equal(x, original)


def test_policy_context_frames_are_frame_gap_steps_apart_whatever_the_policy_stride(monkeypatch):
    """The harness shows the policy every observation (act, then observe for the chunk's later steps); the
    context it hands the model must be spaced as the training windows' frames, not one frame per chunk."""
    import policies.world_model as pwm
    from worldflow.worldmodel.bundle import WorldModel
    from worldflow.worldmodel.robot import RobotConfig

    contexts = []

    def fake_predict(model, ctx, cond, mode, steps, seed, **kw):
        contexts.append(((ctx[0, :, 0, 0, 0] + 1) * 127.5).round().long().tolist())
        return {"actions": torch.zeros(ctx.shape[0], 8, 8)}

    monkeypatch.setattr(pwm, "predict", fake_predict)
    stats = ActionStats.compute(np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32))
    wm = WorldModel(
        model=wm_model(frames=4, image_size=8),
        robot=RobotConfig(),
        stats=stats,
        worldmodel=WorldModelConfig(context=3, horizon=1, action_horizon=8, frame_gap=2, terminate=True),
        meta={},
    )
    policy = pwm.WorldModelPolicy(wm, stride=3)
    policy.reset("open top drawer", 0)

    def obs(step):
        return {"image": np.full((8, 8, 3), step, np.uint8)}

    for step in range(9):  # act at steps 0, 3, 6; observe the rest
        if step % 3 == 0:
            assert len(policy.act(obs(step)).actions) == 3
        else:
            policy.observe(obs(step))
    assert contexts == [[0, 0, 0], [0, 1, 3], [2, 4, 6]]
