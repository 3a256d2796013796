import dataclasses
import json
import shutil

import pytest
import torch
from torch.utils.data import Dataset

from worldflow import ckpt
from worldflow.errors import CheckpointError, ConfigError, TrainingError
from worldflow.logger import read_metrics
from worldflow.model.dit import DiT, ModelConfig
from worldflow.objectives import build_objective
from worldflow.train import EpochBatches, TrainConfig, ema_update, lr_factor, train


class Blobs(Dataset):
    """16 px images of one bright square per class (deterministic per index)."""

    num_classes = 4
    sample_shape = (3, 16, 16)

    def __len__(self):
        return 64

    def __getitem__(self, i):
        y = i % 4
        x = torch.full(self.sample_shape, -1.0)
        x[y % 3, (y // 2) * 8 : (y // 2) * 8 + 8, (y % 2) * 8 : (y % 2) * 8 + 8] = 1.0
        return {"x": x, "y": torch.tensor(y)}


def setup(objective="selfflow"):
    torch.manual_seed(0)
    m = DiT(ModelConfig(size="debug", image_size=16, patch=4, num_classes=4))
    return m, build_objective({"name": objective}, m)


CFG = dict(steps=6, batch_size=8, lr=1e-3, ema_decay=0.9, log_every=1, ckpt_every=3, keep_checkpoints=5)


def losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")]


def test_ema_update_arithmetic():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        a.weight.fill_(1.0)
        b.weight.fill_(3.0)
    ema_update(a, b, decay=0.75)
    assert torch.allclose(a.weight, torch.full((2, 2), 1.0 * 0.75 + 3.0 * 0.25))


def test_epoch_batches_resume_position():
    full = EpochBatches(10, 4, seed=3)
    it = iter(full)
    first = [next(it) for _ in range(5)]  # crosses two epoch boundaries
    resumed = iter(EpochBatches(10, 4, seed=3, start=8))
    assert [next(resumed) for _ in range(3)] == first[2:]
    assert sorted(first[0] + first[1] + first[2][:2]) == list(range(10))  # each epoch is a permutation


def test_tiny_run_lowers_loss_and_writes_everything(tmp_path):
    m, obj = setup()
    cfg = TrainConfig(**{**CFG, "steps": 60, "ckpt_every": 0})
    train(m, obj, Blobs(), cfg, tmp_path / "run", {"model": {}})
    ls = losses(tmp_path / "run")
    assert len(ls) == 60
    assert sum(ls[-10:]) / 10 < 0.7 * sum(ls[:10]) / 10
    (final,) = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")
    meta = json.loads((final / "meta.json").read_text())
    assert meta["step"] == 60 and set(meta["sha256"]) == {"model.safetensors", "ema.safetensors", "state.pt"}
    loaded = ckpt.load_checkpoint(final)
    assert any(k.startswith("objective.head") for k in loaded["model"])  # Self-Flow's head is trained state


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    m, obj = setup()
    train(m, obj, Blobs(), TrainConfig(**CFG), tmp_path / "full", {})
    full = losses(tmp_path / "full")

    m, obj = setup()
    train(m, obj, Blobs(), TrainConfig(**{**CFG, "steps": 3}), tmp_path / "part", {})
    m, obj = setup()  # a new process would rebuild everything from scratch
    train(m, obj, Blobs(), TrainConfig(**CFG), tmp_path / "part", {}, resume=True)
    assert losses(tmp_path / "part") == full


def test_lr_schedules():
    cfg = TrainConfig(steps=6, warmup_steps=2, lr_schedule="cosine")
    cosine = [lr_factor(s, cfg) for s in range(7)]
    assert cosine == pytest.approx([0.5, 1.0, 1.0, 0.8535534, 0.5, 0.1464466, 0.0])
    constant = [lr_factor(s, TrainConfig(steps=6, warmup_steps=2)) for s in range(7)]
    assert constant == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert lr_factor(10, cfg) == 0.0  # past `steps` (a resumed run given more steps) it stays at 0
    # with a time limit the cosine follows whichever of steps and time is further along
    assert lr_factor(3, cfg, time_done=0.5) == pytest.approx(0.5)  # time ahead of the steps' 0.25
    assert lr_factor(4, cfg, time_done=0.25) == pytest.approx(0.5)  # steps ahead of the time
    assert lr_factor(3, cfg, time_done=2.0) == 0.0
    assert lr_factor(0, cfg, time_done=0.9) == 0.5  # the warmup counts steps only
    assert lr_factor(3, TrainConfig(steps=6, warmup_steps=2), time_done=0.9) == 1.0


class FakeClock:
    """A training clock that advances a fixed amount each time it is read: the test cannot depend on load."""

    def __init__(self, tick: float):
        self.t, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


def test_time_limit_stops_with_the_cosine_at_zero_and_resumes_on_the_clock(tmp_path, monkeypatch):
    # steps far beyond a 20-second budget at one (fake) second per clock read: the clock ends the run
    # and the schedule
    monkeypatch.setattr("worldflow.train.now", FakeClock(1.0))
    cfg = TrainConfig(
        **{**CFG, "steps": 100_000, "ckpt_every": 0, "lr_schedule": "cosine", "time_limit_min": 20 / 60}
    )
    m, obj = setup("vanilla")
    train(m, obj, Blobs(), cfg, tmp_path / "r", {})
    logged = read_metrics(tmp_path / "r" / "metrics.jsonl")
    lrs = [r["lr"] for r in logged]
    assert 5 <= len(lrs) <= 20 and lrs[-1] == 0.0 and lrs[0] > 0.0
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))  # no warmup here: the time-driven cosine only falls
    (c,) = ckpt.list_checkpoints(tmp_path / "r" / "checkpoints")
    assert c.name == f"step_{logged[-1]['step']:07d}"
    spent = ckpt.load_checkpoint(c)["state"]["train_seconds"]
    assert 20 <= spent < 22  # stopped at the first step past the budget

    m, obj = setup("vanilla")  # the budget is spent: a resume trains no further step
    train(m, obj, Blobs(), cfg, tmp_path / "r", {}, resume=True)
    assert ckpt.list_checkpoints(tmp_path / "r" / "checkpoints") == [c]
    m, obj = setup("vanilla")  # a larger budget continues from the seconds already spent
    more = TrainConfig(**{**cfg.__dict__, "time_limit_min": (spent + 5) / 60})
    train(m, obj, Blobs(), more, tmp_path / "r", {}, resume=True)
    (c2,) = ckpt.list_checkpoints(tmp_path / "r" / "checkpoints")[-1:]
    assert int(c2.name[5:]) > logged[-1]["step"]
    assert spent + 5 <= ckpt.load_checkpoint(c2)["state"]["train_seconds"] < spent + 7


def test_cosine_run_logs_its_schedule_and_resumes_on_it(tmp_path):
    cfg = TrainConfig(**{**CFG, "warmup_steps": 2, "lr_schedule": "cosine"})
    m, obj = setup()
    train(m, obj, Blobs(), cfg, tmp_path / "full", {})
    logged = [r["lr"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl")]
    assert logged == pytest.approx([1e-3 * lr_factor(s, cfg) for s in range(1, 7)])
    assert logged[-1] == 0.0 and logged[2] < logged[1]

    shutil.copytree(tmp_path / "full", tmp_path / "part")  # as if stopped after the step-3 checkpoint
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step_0000006")
    m, obj = setup()
    train(m, obj, Blobs(), cfg, tmp_path / "part", {}, resume=True)
    assert losses(tmp_path / "part") == losses(tmp_path / "full")


def test_existing_run_needs_resume(tmp_path):
    m, obj = setup("vanilla")
    train(m, obj, Blobs(), TrainConfig(**{**CFG, "steps": 1}), tmp_path / "r", {})
    m, obj = setup("vanilla")
    with pytest.raises(CheckpointError, match="already has checkpoints"):
        train(m, obj, Blobs(), TrainConfig(**{**CFG, "steps": 1}), tmp_path / "r", {})


def test_corrupt_checkpoint_is_detected(tmp_path):
    m, obj = setup("vanilla")
    train(m, obj, Blobs(), TrainConfig(**{**CFG, "steps": 1}), tmp_path / "r", {})
    (c,) = ckpt.list_checkpoints(tmp_path / "r" / "checkpoints")
    data = bytearray((c / "ema.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (c / "ema.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="ema.safetensors does not match its hash"):
        ckpt.load_checkpoint(c)


def test_nan_loss_stops_with_step_and_no_checkpoint(tmp_path):
    class NaNs(Blobs):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["x"][0, 0, 0] = float("nan")
            return item

    m, obj = setup("vanilla")
    with pytest.raises(TrainingError, match="at step 1"):
        train(m, obj, NaNs(), TrainConfig(**CFG), tmp_path / "r", {})
    assert ckpt.list_checkpoints(tmp_path / "r" / "checkpoints") == []


def test_init_from_declares_missing_keys(tmp_path):
    m, obj = setup("vanilla")
    train(
        m,
        obj,
        Blobs(),
        TrainConfig(**{**CFG, "steps": 2}),
        tmp_path / "pre",
        {"model": dataclasses.asdict(m.cfg)},
    )
    torch.manual_seed(0)
    wm = DiT(ModelConfig(size="debug", image_size=16, patch=4, num_classes=4, action_dim=7, action_horizon=3))
    with pytest.raises(CheckpointError, match="embed_in.actions.weight"):
        train(
            wm,
            build_objective({"name": "vanilla"}, wm),
            ActionBlobs(),
            TrainConfig(**{**CFG, "steps": 1}),
            tmp_path / "ft",
            {},
            init_from=str(tmp_path / "pre"),
        )
    pre = ckpt.load_checkpoint(tmp_path / "pre", with_state=False)["ema"]
    wm = DiT(ModelConfig(size="debug", image_size=16, patch=4, num_classes=4, action_dim=7, action_horizon=3))
    obj = build_objective({"name": "vanilla"}, wm)
    patterns = ["*actions*", "action_type"]
    train(
        wm,
        obj,
        ActionBlobs(),
        TrainConfig(**{**CFG, "steps": 0}),
        tmp_path / "ft2",
        {},
        init_from=str(tmp_path / "pre"),
        expected_missing=patterns,
    )
    assert torch.equal(wm.blocks[0].attn.qkv.weight.detach(), pre["blocks.0.attn.qkv.weight"])
    # an output layer trained to predict clean data does not start a velocity-prediction run
    wx = DiT(ModelConfig(size="debug", image_size=16, patch=4, num_classes=4, prediction="v"))
    with pytest.raises(ConfigError, match="trained with model.prediction=x"):
        train(wx, build_objective({"name": "vanilla"}, wx), Blobs(), TrainConfig(**{**CFG, "steps": 0}),
              tmp_path / "ft3", {"model": {"prediction": "v"}}, init_from=str(tmp_path / "pre"))  # fmt: skip


class ActionBlobs(Blobs):
    def __getitem__(self, i):
        return {**super().__getitem__(i), "actions": torch.zeros(3, 7)}


def test_bad_train_config(tmp_path):
    m, obj = setup("vanilla")
    with pytest.raises(ConfigError, match="not divisible by train.grad_accum"):
        train(m, obj, Blobs(), TrainConfig(batch_size=8, grad_accum=3), tmp_path / "r", {})
    with pytest.raises(ConfigError, match="train.precision='fp16'"):
        train(m, obj, Blobs(), TrainConfig(batch_size=8, precision="fp16"), tmp_path / "r", {})
    with pytest.raises(ConfigError, match="train.lr_schedule='linear'"):
        train(m, obj, Blobs(), TrainConfig(batch_size=8, lr_schedule="linear"), tmp_path / "r", {})
    with pytest.raises(ConfigError, match="train.time_limit_min=-1"):
        train(m, obj, Blobs(), TrainConfig(batch_size=8, time_limit_min=-1), tmp_path / "r", {})


class DeterministicLoss(torch.nn.Module):
    """No noise: the velocity at t = 0.5 regressed on the data, so micro-batching changes nothing."""

    needs_teacher = False

    def forward(self, model, teacher, batch):
        tokens = model.patchify(batch["x"])
        out, _ = model({"frames": tokens}, torch.full((len(tokens),), 0.5), y=batch["y"])
        loss = (out["frames"] - tokens).pow(2).mean()
        return loss, {}


def test_grad_accumulation_matches_full_batch(tmp_path):
    states = []
    for accum in (1, 2):
        m, _ = setup("vanilla")
        train(
            m,
            DeterministicLoss(),
            Blobs(),
            TrainConfig(**{**CFG, "steps": 2, "grad_accum": accum}),
            tmp_path / f"a{accum}",
            {},
        )
        states.append(m.state_dict())
    init = setup("vanilla")[0].state_dict()
    assert any((states[0][k] != init[k]).any() for k in init)  # the step changed the weights
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], atol=1e-6, rtol=1e-5)


def test_disk_full_on_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    m, obj = setup("vanilla")
    train(m, obj, Blobs(), TrainConfig(**{**CFG, "steps": 2, "ckpt_every": 1}), tmp_path / "r", {})
    before = [c.name for c in ckpt.list_checkpoints(tmp_path / "r" / "checkpoints")]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    m, obj = setup("vanilla")
    with pytest.raises(CheckpointError, match="No space left on device"):
        train(
            m,
            obj,
            Blobs(),
            TrainConfig(**{**CFG, "steps": 3, "ckpt_every": 0}),
            tmp_path / "r",
            {},
            resume=True,
        )
    root = tmp_path / "r" / "checkpoints"
    assert [c.name for c in ckpt.list_checkpoints(root)] == before
    assert not list(root.glob(".tmp-*"))  # nothing half-written left behind
    ckpt.load_checkpoint(ckpt.list_checkpoints(root)[-1])


def test_a_checkpoint_from_before_model_prediction_loads_as_velocity_prediction(tmp_path):
    """meta.json written before the key existed has no model.prediction: those models predicted v."""
    m = DiT(ModelConfig(size="debug", image_size=16, patch=4, num_classes=4, prediction="v"))
    model_meta = {k: v for k, v in dataclasses.asdict(m.cfg).items() if k != "prediction"}
    state = m.state_dict()
    ckpt.save_checkpoint(tmp_path / "checkpoints", 1, state, state, {"step": 1}, {"model": model_meta}, 2)
    loaded, _ = ckpt.from_checkpoint(tmp_path)
    assert loaded.cfg.prediction == "v"
    x = DiT(ModelConfig(size="debug", image_size=16, patch=4, num_classes=4, prediction="x"))
    ckpt.save_checkpoint(
        tmp_path / "x" / "checkpoints", 1, state, state, {"step": 1}, {"model": dataclasses.asdict(x.cfg)}, 2
    )
    assert ckpt.from_checkpoint(tmp_path / "x")[0].cfg.prediction == "x"
