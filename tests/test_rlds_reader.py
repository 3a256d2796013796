"""worldflow/data/rlds.py: RLDS (RT-1 schema) -> standardised episode cache, and its errors."""

import dataclasses

import numpy as np
import pytest

from tests.test_rlds_writer import tiny_episodes
from worldflow.data.actions import rel2abs_gripper
from worldflow.data.rlds import RobotDataConfig, dataset_dir, open_cache
from worldflow.errors import DataError

pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from envs.rlds_writer import write_rt1_dataset

    root = tmp_path_factory.mktemp("rt1")
    write_rt1_dataset(tiny_episodes(), root, shard_size=2, progress=False)
    return root


def test_reads_rt1_schema_into_standardised_cache(dataset, tmp_path):
    cfg = RobotDataConfig(root=str(dataset))
    cache = open_cache(cfg, 16, tmp_path / "cache", progress=False)
    eps = tiny_episodes()
    # the two-stage episode becomes one cache episode per instruction: 3 + 4 + (2 + 3) steps
    assert len(cache) == 4 and cache.frames.shape == (12, 16, 16, 3)
    assert cache.meta["instructions"] == [
        "pick coke can",
        "move blue plastic bottle near pepsi can",
        "open top drawer",
        "place apple into top drawer",
    ]
    assert cache.episodes.tolist() == [[0, 3], [3, 4], [7, 2], [9, 3]]
    got = [cache.episode(e) for e in range(4)]
    got = [
        got[0],
        got[1],
        {k: np.concatenate([got[2][k], got[3][k]]) for k in ("actions", "terminate", "proprio")},
    ]
    for ep, g in zip(eps, got):
        np.testing.assert_allclose(g["actions"][:, :3], ep.world_vector, atol=1e-6)
        np.testing.assert_allclose(g["actions"][:, 3:6], ep.rotation_delta, atol=1e-6)
        expected_grip = rel2abs_gripper(ep.gripper_closedness_action[:, 0])  # over the whole episode
        np.testing.assert_array_equal(g["actions"][:, 6], expected_grip)  # relative -> absolute
        assert g["terminate"].tolist() == (ep.terminate_episode[:, 0] == 1).tolist()
        assert g["proprio"].shape == (len(ep.world_vector), 8)
    assert cache.episode(2)["terminate"].tolist() == [False, True]  # the first stage ends on its terminate
    assert not np.array_equal(cache.embeddings[2], cache.embeddings[3])  # each stage its own instruction
    # proprioception statistics for the world model's condition, stored beside the action statistics
    assert len(cache.proprio_stats.q01) == 8 and cache.meta["proprio_stats"]["mask"] == [True] * 8
    # frames: 256x320 JPEG gradients area-resized to 16x16 keep the mean brightness
    assert abs(float(cache.frames[0].mean()) - float(eps[0].image[0].mean())) < 3
    again = open_cache(cfg, 16, tmp_path / "cache", progress=False)  # cached: same folder, no rebuild
    assert again.path == cache.path


def test_missing_key_names_the_key(dataset, tmp_path):
    cfg = RobotDataConfig(root=str(dataset), image_key="rgb")
    with pytest.raises(DataError, match="steps/observation/rgb"):
        open_cache(cfg, 16, tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache").glob("*/meta.json"))


def test_wrong_image_size_names_the_key(dataset, tmp_path):
    cfg = RobotDataConfig(root=str(dataset), image_shape=[480, 640, 3])
    with pytest.raises(
        DataError, match=r"steps/observation/image has shape \[256, 320, 3\], expected \[480, 640, 3\]"
    ):
        open_cache(cfg, 16, tmp_path / "cache", progress=False)


def test_corrupt_shard_names_the_dataset_and_leaves_no_cache(dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    d = dataset_dir(RobotDataConfig(root=str(copy)))
    shard = sorted(p for p in __import__("pathlib").Path(d).glob("*.tfrecord-*"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt or unreadable shard"):
        open_cache(RobotDataConfig(root=str(copy)), 16, tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache").glob("*/meta.json"))


def test_no_dataset_folder(tmp_path):
    with pytest.raises(DataError, match="no RLDS dataset at"):
        dataset_dir(RobotDataConfig(root=str(tmp_path)))
    assert dataclasses.asdict(RobotDataConfig())["gripper"] == "relative"


def test_nan_actions_in_a_dataset_name_the_episode_and_leave_no_cache(tmp_path, monkeypatch):
    """A dataset written by someone else's tool can hold NaN actions (ours refuses to write them)."""
    import envs.rlds_writer as writer

    eps = tiny_episodes()
    eps[1].world_vector[2, 0] = np.nan
    real = writer._array  # bypass only the writer's own checks of world_vector

    def lenient(value, name, where, shape, want):
        arr = np.asarray(value)
        return arr if name == "world_vector" else real(value, name, where, shape, want)

    monkeypatch.setattr(writer, "_array", lenient)
    writer.write_rt1_dataset(eps, tmp_path / "rt1", progress=False)
    with pytest.raises(DataError, match=r"episode 1.*NaN"):
        open_cache(RobotDataConfig(root=str(tmp_path / "rt1")), 16, tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache").glob("*/meta.json"))


def test_crop_keeps_the_box_before_resizing_as_the_policy_does(dataset, tmp_path):
    from policies.world_model import to_model_frame

    crop = [0.0, 0.5, 0.5, 0.5]  # the top-right quarter of the 256x320 frames
    full = open_cache(RobotDataConfig(root=str(dataset)), 16, tmp_path / "cache", progress=False)
    cfg = RobotDataConfig(root=str(dataset), crop=crop)
    cropped = open_cache(cfg, 16, tmp_path / "cache", progress=False)
    assert cropped.path != full.path and cropped.meta["config"]["crop"] == crop  # part of the cache's key
    image = tiny_episodes()[0].image[0]  # (256, 320, 3), stored as JPEG
    as_policy = ((to_model_frame(image, 16, crop) + 1) * 127.5).permute(1, 2, 0).numpy()
    whole = ((to_model_frame(image, 16) + 1) * 127.5).permute(1, 2, 0).numpy()
    # the policy's frame matches the cache's within JPEG error; the uncropped frame does not
    assert np.abs(cropped.frames[0] - as_policy).mean() < 2
    assert np.abs(cropped.frames[0] - whole).mean() > 15
    assert np.abs(full.frames[0] - whole).mean() < 2


@pytest.mark.parametrize(
    "crop", [[0.5, 0.0, 0.6, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [-0.1, 0, 1, 1]]
)
def test_bad_crop_fails_before_anything_is_written(dataset, tmp_path, crop):
    from worldflow.errors import ConfigError

    with pytest.raises(ConfigError, match=r"robot\.data\.crop=.*top, left, height, width"):
        open_cache(RobotDataConfig(root=str(dataset), crop=crop), 16, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()


def test_the_robot_config_owns_the_action_layout(dataset, tmp_path):
    # a robot whose action is translation ‖ gripper only: 4 numbers, no code change
    cfg = RobotDataConfig(root=str(dataset), action_keys=["world_vector"], action_dims=[3])
    assert cfg.action_dim == 4
    cache = open_cache(cfg, 16, tmp_path / "cache", progress=False)
    eps = tiny_episodes()
    assert cache.actions.shape == (12, 4) and cache.meta["action_dim"] == 4
    np.testing.assert_allclose(cache.episode(0)["actions"][:, :3], eps[0].world_vector, atol=1e-6)
    assert len(cache.stats.q01) == 4 and cache.stats.mask == [True, True, True, False]  # gripper last
    wrong = RobotDataConfig(root=str(dataset), action_dims=[3, 4])
    with pytest.raises(
        DataError, match=r"steps/action/rotation_delta has shape \[3\], robot.data.action_dims says 4"
    ):
        open_cache(wrong, 16, tmp_path / "cache2", progress=False)
    with pytest.raises(DataError, match="one size per action key"):
        open_cache(
            RobotDataConfig(root=str(dataset), action_dims=[6]), 16, tmp_path / "cache3", progress=False
        )
    assert not (tmp_path / "cache2").exists() or not any((tmp_path / "cache2").glob("*/meta.json"))
