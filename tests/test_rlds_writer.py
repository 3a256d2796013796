"""envs/rlds_writer.py and worldflow/language.py: RT-1 schema, values, atomicity, errors; the stand-in embedding."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.rlds_writer import (
    CONTINUE,
    TERMINATE,
    Episode,
    RT1Writer,
    episode_from_rollout,
    read_rt1_episodes,
    validate_episode,
    write_rt1_dataset,
)
from worldflow.errors import ConfigError, DataError
from worldflow.language import EMBEDDING_DIM, language_embedding

ROOT = Path(__file__).resolve().parents[1]
F32 = "float32"

# DESIGN.md §3, the spec: every key of fractal20220817_data 0.1.0 with its shape and dtype.
RT1_STEP_SCHEMA = {
    "observation/image": ((256, 320, 3), "uint8"),
    "observation/natural_language_instruction": ((), "string"),
    "observation/natural_language_embedding": ((512,), F32),
    "observation/base_pose_tool_reached": ((7,), F32),
    "observation/gripper_closed": ((1,), F32),
    "observation/gripper_closedness_commanded": ((1,), F32),
    "observation/height_to_bottom": ((1,), F32),
    "observation/orientation_box": ((2, 3), F32),
    "observation/orientation_start": ((4,), F32),
    "observation/robot_orientation_positions_box": ((3, 3), F32),
    "observation/rotation_delta_to_go": ((3,), F32),
    "observation/src_rotation": ((4,), F32),
    "observation/vector_to_go": ((3,), F32),
    "observation/workspace_bounds": ((3, 3), F32),
    "action/world_vector": ((3,), F32),
    "action/rotation_delta": ((3,), F32),
    "action/gripper_closedness_action": ((1,), F32),
    "action/terminate_episode": ((3,), "int32"),
    "action/base_displacement_vector": ((2,), F32),
    "action/base_displacement_vertical_rotation": ((1,), F32),
    "is_first": ((), "bool"),
    "is_last": ((), "bool"),
    "is_terminal": ((), "bool"),
    "reward": ((), F32),
}


def smooth_frames(steps: int, offset: int, size=(256, 320)) -> np.ndarray:
    """(T, H, W, 3) uint8 gradients that JPEG keeps within a few levels; each frame's mean differs."""
    h, w = size
    base = np.linspace(0, 150, w)[None, :, None] + np.linspace(0, 40, h)[:, None, None] + [[[0, 20, 40]]]
    return np.stack([np.clip(base + 8 * t + offset, 0, 255).astype(np.uint8) for t in range(steps)])


def rollout(steps: int, seed: int, instruction, terminates=None, size=(256, 320)) -> Episode:
    rng = np.random.default_rng(seed)
    proprio = rng.uniform(-1, 1, (steps, 8)).astype(np.float32)
    proprio[:, 7] = rng.uniform(0, 1, steps)
    actions = rng.normal(0, 0.02, (steps, 7)).astype(np.float32)
    actions[:, 6] = rng.choice([-1.0, 0.0, 1.0], steps)
    flags = np.zeros(steps, bool) if terminates is None else terminates
    return episode_from_rollout(smooth_frames(steps, 10 * seed, size), proprio, actions, flags, instruction)


def tiny_episodes() -> list[Episode]:
    two_stage = ["open top drawer"] * 2 + ["place apple into top drawer"] * 3
    return [
        rollout(3, 0, "pick coke can"),
        rollout(4, 1, "move blue plastic bottle near pepsi can"),
        rollout(5, 2, two_stage, terminates=np.array([0, 1, 0, 0, 0], bool)),
    ]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    pytest.importorskip("tensorflow_datasets")
    out = tmp_path_factory.mktemp("rlds")
    path = write_rt1_dataset(tiny_episodes(), out, shard_size=2, progress=False)
    return out, path


def flat_features(features, prefix=""):
    inner = getattr(features, "feature", features)  # a tfds Dataset feature wraps its step FeaturesDict
    out = {}
    for key, feature in inner.items():
        if hasattr(getattr(feature, "feature", feature), "items"):
            out |= flat_features(feature, f"{prefix}{key}/")
        else:
            out[f"{prefix}{key}"] = feature
    return out


def test_schema_is_exactly_rt1(written):
    import tensorflow_datasets as tfds

    out, path = written
    assert path == out / "fractal20220817_data" / "0.1.0"
    shards = sorted(p.name for p in path.glob("*.tfrecord*"))
    assert shards == [f"fractal20220817_data-train.tfrecord-0000{i}-of-00002" for i in (0, 1)]
    assert {"dataset_info.json", "features.json"} <= {p.name for p in path.iterdir()}
    builder = tfds.builder_from_directory(str(path))
    assert builder.info.name == "fractal20220817_data" and str(builder.info.version) == "0.1.0"
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.splits["train"].shard_lengths == [2, 1]
    assert list(builder.info.features) == ["steps"]
    steps = flat_features(builder.info.features["steps"])
    got = {k: (tuple(f.shape), f.dtype.name) for k, f in steps.items()}  # tf dtype names: string, int32, ...
    assert got == RT1_STEP_SCHEMA  # exactly these keys: no discount, nothing missing
    image = steps["observation/image"]
    assert type(image).__name__ == "Image" and image.encoding_format == "jpeg"
    # the reader the rest of worldflow uses accepts it as RT-1
    from worldflow.data.rlds import RobotDataConfig, check_schema

    check_schema(RobotDataConfig(), builder)


def test_values_round_trip(written):
    _, path = written
    episodes = tiny_episodes()
    read = list(read_rt1_episodes(path))
    assert [len(e["reward"]) for e in read] == [3, 4, 5]
    for ep, got in zip(episodes, read):
        obs, act = got["observation"], got["action"]
        t = len(ep.image)
        np.testing.assert_array_equal(act["world_vector"], ep.world_vector)
        np.testing.assert_array_equal(act["rotation_delta"], ep.rotation_delta)
        np.testing.assert_array_equal(act["gripper_closedness_action"], ep.gripper_closedness_action)
        assert act["terminate_episode"].dtype == np.int32
        np.testing.assert_array_equal(act["terminate_episode"], ep.terminate_episode)
        np.testing.assert_array_equal(act["base_displacement_vector"], np.zeros((t, 2)))
        np.testing.assert_array_equal(obs["base_pose_tool_reached"], ep.base_pose_tool_reached)
        np.testing.assert_array_equal(obs["gripper_closed"], ep.gripper_closed)
        err = np.abs(obs["image"].astype(int) - ep.image.astype(int))
        assert err.mean() < 2.0 and np.percentile(err, 99) <= 8  # JPEG, not a copy, but close
        texts = [ep.instruction] * t if isinstance(ep.instruction, str) else ep.instruction
        assert obs["natural_language_instruction"] == texts
        np.testing.assert_array_equal(
            obs["natural_language_embedding"], [language_embedding(s) for s in texts]
        )
        np.testing.assert_array_equal(got["is_first"], np.arange(t) == 0)
        np.testing.assert_array_equal(got["is_last"], np.arange(t) == t - 1)
        np.testing.assert_array_equal(got["is_terminal"], np.arange(t) == t - 1)
        np.testing.assert_array_equal(got["reward"], np.arange(t) == t - 1)
        np.testing.assert_array_equal(
            obs["orientation_start"], np.repeat(ep.base_pose_tool_reached[:1, 3:7], t, 0)
        )
    # the two-stage episode: terminate signalled at step 1 (subtask switch) and on the last step
    np.testing.assert_array_equal(read[2]["action"]["terminate_episode"][:, 0], [0, 1, 0, 0, 1])


def test_commanded_closedness_latches_relative_commands():
    ep = rollout(5, 0, "pick coke can")
    ep.gripper_closed[:] = 0.0
    ep.gripper_closedness_action[:, 0] = [0.0, 1.0, 0.0, -1.0, 0.0]
    steps = validate_episode(ep, 0)
    assert steps["observation"]["gripper_closedness_commanded"][:, 0].tolist() == [0, 0, 1, 1, 0]


def test_episode_from_rollout_conversion():
    frames = smooth_frames(4, 0)
    proprio = np.arange(32, dtype=np.float32).reshape(4, 8) / 100
    proprio[:, 7] = [0.0, 0.4, 0.6, 1.0]
    actions = np.arange(28, dtype=np.float32).reshape(4, 7)
    ep = episode_from_rollout(
        list(frames), proprio, actions, [False, True, False, False], "pick coke can", success=False
    )
    # the suite's quaternion is w-first; RT-1 stores x, y, z, w
    np.testing.assert_array_equal(ep.base_pose_tool_reached, proprio[:, [0, 1, 2, 4, 5, 6, 3]])
    assert ep.gripper_closed[:, 0].tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(ep.world_vector, actions[:, :3])
    np.testing.assert_array_equal(ep.rotation_delta, actions[:, 3:6])
    np.testing.assert_array_equal(ep.gripper_closedness_action, actions[:, 6:])
    np.testing.assert_array_equal(ep.terminate_episode, [CONTINUE, TERMINATE, CONTINUE, TERMINATE])
    assert ep.terminate_episode.dtype == np.int32
    assert ep.reward.tolist() == [0, 0, 0, 0]  # not a success
    with pytest.raises(DataError, match="actions has shape \\(3, 7\\)"):
        episode_from_rollout(list(frames), proprio, actions[:3], [False] * 4, "pick coke can")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("image", np.zeros((3, 128, 128, 3), np.uint8), r"episode 0: image has shape \(3, 128, 128, 3\)"),
        ("image", np.zeros((3, 256, 320, 3), np.float32), r"episode 0: image has shape .* dtype float32"),
        ("world_vector", np.zeros((3, 2), np.float32), r"episode 0: world_vector has shape \(3, 2\)"),
        ("reward", np.zeros(4, np.float32), r"episode 0: reward has shape \(4,\)"),
        ("terminate_episode", np.ones((3, 3), np.int32), "terminate_episode rows must be one-hot"),
        ("rotation_delta", np.full((3, 3), np.nan, np.float32), "rotation_delta contains NaN"),
        ("instruction", ["a", "b"], "instruction must be a str or 3 str"),
        ("extras", {"discount": np.ones((3, 1))}, "extras key 'discount' is not an RT-1 observation"),
    ],
)
def test_bad_episode_names_the_field(field, value, message):
    ep = rollout(3, 0, "pick coke can")
    setattr(ep, field, value)
    with pytest.raises(DataError, match=message):
        validate_episode(ep, 0)


def test_missing_key_in_dict_episode():
    d = vars(rollout(3, 0, "pick coke can")).copy()
    del d["gripper_closed"]
    with pytest.raises(DataError, match=r"episode 7: missing key\(s\) \['gripper_closed'\]"):
        validate_episode(d, 7)


def test_wrong_image_mid_stream_names_episode_and_leaves_nothing(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    bad = rollout(3, 1, "pick coke can", size=(128, 128))
    with pytest.raises(DataError, match=r"episode 1: image has shape \(3, 128, 128, 3\)"):
        write_rt1_dataset([rollout(3, 0, "pick coke can"), bad], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # the folders it created are removed again


def test_interrupted_write_leaves_no_dataset(tmp_path):
    pytest.importorskip("tensorflow_datasets")

    def episodes():
        yield rollout(3, 0, "pick coke can")
        yield rollout(3, 1, "pick coke can")  # shard_size=1: two shards are on disk when the error comes
        raise RuntimeError("simulator crashed")

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="simulator crashed"):
        write_rt1_dataset(episodes(), out, shard_size=1, progress=False)
    assert not (out / "fractal20220817_data" / "0.1.0").exists()
    assert out.is_dir() and list(out.rglob("*")) == []  # nothing partial left, the user's folder kept


def test_refuses_to_overwrite_unless_asked(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    path = write_rt1_dataset([rollout(3, 0, "pick coke can")], tmp_path, progress=False)
    info = (path / "dataset_info.json").read_text()
    consumed = []

    def episodes():
        consumed.append(1)
        yield rollout(3, 1, "open top drawer")

    with pytest.raises(DataError, match="already exists at .*0.1.0; pass overwrite=True"):
        write_rt1_dataset(episodes(), tmp_path, progress=False)
    assert consumed == []  # refused before any work
    assert (path / "dataset_info.json").read_text() == info
    write_rt1_dataset([rollout(3, 1, "open top drawer")] * 2, tmp_path, overwrite=True, progress=False)
    assert json.loads((path / "dataset_info.json").read_text())["splits"][0]["shardLengths"] == ["2"]
    assert [e["observation"]["natural_language_instruction"][0] for e in read_rt1_episodes(tmp_path)] == [
        "open top drawer"
    ] * 2
    assert [p.name for p in (tmp_path / "fractal20220817_data").iterdir()] == ["0.1.0"]  # no leftovers


def test_unwritable_folder_is_a_data_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot write an RLDS dataset in .*a_file/out"):
        write_rt1_dataset([rollout(3, 0, "pick coke can")], blocker / "out", progress=False)


def test_reader_rejects_a_folder_without_a_dataset(tmp_path):
    with pytest.raises(DataError, match="no RLDS dataset at"):
        next(read_rt1_episodes(tmp_path))


def test_language_embedding_unit_norm_and_similarity():
    pick = language_embedding("pick coke can")
    assert pick.shape == (EMBEDDING_DIM,) and pick.dtype == np.float32
    assert abs(np.linalg.norm(pick) - 1) < 1e-6
    np.testing.assert_array_equal(pick, language_embedding("Pick  coke can."))  # case, spaces, punctuation
    similar = pick @ language_embedding("pick up the coke can")
    unrelated = pick @ language_embedding("open middle drawer")
    assert similar > 0.6 and unrelated < 0.3 and similar > unrelated + 0.4
    drawers = language_embedding("open top drawer") @ language_embedding("close top drawer")
    assert drawers > language_embedding("open top drawer") @ language_embedding("move redbull can near apple")
    assert abs(np.linalg.norm(language_embedding(""))) - 1 < 1e-6  # empty text: still a unit vector


def test_language_embedding_is_the_same_in_another_process():
    code = "from worldflow.language import language_embedding as e; print(e('place apple into top drawer').tobytes().hex())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert bytes.fromhex(out.stdout.strip()) == language_embedding("place apple into top drawer").tobytes()
    # pinned: the recipe must not drift across machines or numpy versions (bump EMBEDDING_NAME if it must)
    np.testing.assert_allclose(language_embedding("pick coke can")[:4], PINNED_PICK_COKE_CAN, atol=1e-6)


PINNED_PICK_COKE_CAN = [-0.01377393, 0.03077776, -0.06463176, 0.00840078]


class FakeTwoStageEnv:
    """The planned envs API in miniature: drawer + apple's two subtasks; even seeds succeed."""

    instructions = ["open top drawer", "place apple into top drawer"]

    def __init__(self, task, image_size, **kw):
        self.size = image_size
        self.unwrapped = self

    def reset(self, seed=None):
        self.t, self.stage, self.seed = 0, 0, seed
        return self._obs(), {}

    def _obs(self):
        return {
            "image": smooth_frames(1, 10 * self.t, self.size)[0],
            "proprio": np.full(8, self.t / 10, np.float32),
        }

    def get_language_instruction(self):
        return self.instructions[self.stage]

    def is_final_subtask(self):
        return self.stage == 1

    def advance_to_next_subtask(self):
        self.stage = 1

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, self.t >= 10, {"success": self.seed % 2 == 0 and self.stage == 1}

    def close(self):
        pass


class FakeExpert:
    """Signals terminate at step 1 (end of subtask 1) and step 3 (end of the episode)."""

    def __init__(self, env):
        self.env = env

    def reset(self):
        pass

    def act(self, obs):
        return np.full(7, self.env.t / 100, np.float32), self.env.t in (1, 3)


def test_collect_keeps_successes_under_simplers_loop(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorflow_datasets")
    import types

    import envs
    from eval.collect import CollectConfig, collect

    monkeypatch.setattr(envs, "make", FakeTwoStageEnv, raising=False)
    monkeypatch.setattr(envs, "TASKS", ["fake_drawer_apple"], raising=False)
    monkeypatch.setattr(envs, "TASK_GROUPS", {"fake_all": ["fake_drawer_apple"]}, raising=False)
    monkeypatch.setitem(sys.modules, "envs.experts", types.SimpleNamespace(make_expert=FakeExpert))
    cfg = CollectConfig(task="fake_all", episodes=3, out=str(tmp_path), progress=False)
    path = collect(cfg)
    assert "kept 2 of 3 episodes (1 failed)" in capsys.readouterr().out
    read = list(read_rt1_episodes(path))
    assert len(read) == 2  # seeds 0 and 2; seed 1 failed
    for ep in read:
        # step 1's terminate advanced the subtask and was still executed; step 3's ended the episode
        assert ep["observation"]["natural_language_instruction"] == [
            FakeTwoStageEnv.instructions[i] for i in (0, 0, 1, 1)
        ]
        np.testing.assert_array_equal(ep["action"]["terminate_episode"][:, 0], [0, 1, 0, 1])
        np.testing.assert_allclose(ep["action"]["world_vector"][:, 0], [0, 0.01, 0.02, 0.03])
        np.testing.assert_array_equal(ep["reward"], [0, 0, 0, 1])


def test_resumable_writer_keeps_journaled_shards_after_a_crash(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    eps = [rollout(3, i, "pick coke can") for i in range(5)]
    w = RT1Writer(tmp_path, shard_size=2, resumable="recipe A")
    for i, ep in enumerate(eps[:3]):
        w.add(ep, marker=i)
    w._record_writer.flush()  # the third episode is in an open shard when the process dies (no finish)
    del w
    again = RT1Writer(tmp_path, shard_size=2, resumable="recipe A")
    assert (again.resumed, again.episodes, again.shard_lengths) == (1, 2, [2])  # the closed shard only
    for i in range(again.resumed + 1, 5):
        again.add(eps[i], marker=i)
    path = again.finish()
    read = list(read_rt1_episodes(path))
    assert len(read) == 5 and not (path / "journal.json").exists()
    for ep, back in zip(eps, read):
        np.testing.assert_allclose(back["action"]["world_vector"], ep.world_vector, atol=1e-6)
    # another recipe never continues someone else's shards
    w = RT1Writer(tmp_path / "b", shard_size=1, resumable="recipe A")
    w.add(eps[0], marker=0)
    del w
    fresh = RT1Writer(tmp_path / "b", shard_size=1, resumable="recipe B")
    assert (fresh.resumed, fresh.episodes) == (None, 0) and list(fresh.tmp.iterdir()) == []


def test_dart_noise_moves_the_executed_translation_and_records_the_experts_action(tmp_path, monkeypatch):
    import types

    from eval.collect import CollectConfig, collect, perturbed, rollout
    from eval.loop import LocalEnv

    monkeypatch.setitem(sys.modules, "envs.experts", types.SimpleNamespace(make_expert=FakeExpert))

    class Recording(FakeTwoStageEnv):
        def step(self, action):
            self.sent.append(np.asarray(action).copy())
            return super().step(action)

    env = Recording("fake", (32, 40))
    env.sent = []
    local = LocalEnv(env)
    episode, _ = rollout(local, seed=0, noise=0.01)
    sent = np.stack(env.sent)
    recorded = np.c_[episode.world_vector, episode.rotation_delta]
    # the expert's action is what the data keeps; the env got it with translation noise (~1 cm), no more
    np.testing.assert_allclose(recorded[:, 0], np.arange(len(sent)) / 100, atol=1e-6)
    wiggle = sent[:, :3] - recorded[:, :3]
    assert 0.002 < np.abs(wiggle).mean() < 0.02 and np.allclose(sent[:, 3:6], recorded[:, 3:6])
    assert np.abs(sent[:, :3]).max() <= 0.05 + 1e-6  # within the suite's action bounds
    env.sent = []
    rollout(local, seed=0, noise=0.01)
    np.testing.assert_array_equal(np.stack(env.sent), sent)  # deterministic in the seed (resumable)
    env.sent = []
    ran, _ = rollout(local, seed=0, noise=0.01, record="executed")
    # the same noise, and now the data keeps what the env ran: the action that explains the next frame
    np.testing.assert_allclose(
        np.c_[ran.world_vector, ran.rotation_delta], np.stack(env.sent)[:, :6], atol=1e-6
    )
    np.testing.assert_array_equal(np.stack(env.sent), sent)
    with pytest.raises(ConfigError, match="record='label'; use expert or executed"):
        rollout(local, seed=0, noise=0.01, record="label")
    clean = np.full(7, 0.01, np.float32)
    assert perturbed(clean, 0.0, np.random.default_rng(0)) is clean
    with pytest.raises(ConfigError, match=r"noise=0.2; use a translation std in \[0, 0.05\)"):
        collect(CollectConfig(task="fake_all", episodes=1, out=str(tmp_path), noise=0.2, progress=False))
