"""RLDS reader (RT-1 `fractal20220817_data` and other Open X-Embodiment datasets) -> the episode cache.

TensorFlow is imported here only, in the one-time conversion; training reads the cache (`cache.py`).
A dataset is described by a `RobotDataConfig` (image key, action keys, gripper and rotation conventions),
so another OXE dataset is a YAML file in `configs/robot/`, not code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from worldflow.data.actions import rel2abs_gripper
from worldflow.data.cache import CacheWriter, EpisodeCache
from worldflow.data.images import check_crop, crop_window
from worldflow.errors import DataError


@dataclass
class RobotDataConfig:
    name: str = "fractal20220817_data"
    version: str = "0.1.0"
    root: str | None = None  # folder holding <name>/<version>/, or that version folder; gs:// passes to tfds
    split: str = "train"
    image_key: str = "image"
    image_shape: list[int] = field(default_factory=lambda: [256, 320, 3])  # as declared; [] = any
    instruction_key: str = "natural_language_instruction"
    embedding_key: str | None = "natural_language_embedding"  # None: computed by worldflow.language
    # The action spec: the keys concatenated in order, each key's size, then one gripper number. RT-1:
    # translation (3) ‖ rotation (3) ‖ gripper = 7; a bimanual robot lists its arms' keys and sizes here.
    action_keys: list[str] = field(default_factory=lambda: ["world_vector", "rotation_delta"])
    action_dims: list[int] = field(default_factory=lambda: [3, 3])
    gripper_key: str = "gripper_closedness_action"
    gripper: str = "relative"  # relative (+1 close, −1 open) | absolute (1 open, 0 closed) | absolute_closed1
    rotation: str = "axis_angle"  # how the dataset's rotation deltas are to be read by the env (recorded)
    terminate_key: str | None = "terminate_episode"  # one-hot (3,), index 0 = terminate; or a scalar
    proprio_keys: list[str] = field(default_factory=lambda: ["base_pose_tool_reached", "gripper_closed"])
    max_episodes: int | None = None
    crop: list[float] | None = None  # [top, left, height, width] fractions kept before resizing; None: all

    @property
    def action_dim(self) -> int:
        """The size of one standardised action: the keys' sizes and the gripper."""
        return sum(self.action_dims) + 1


def dataset_dir(cfg: RobotDataConfig) -> str:
    """The folder `tfds.builder_from_directory` reads: root/<name>/<version>, or root itself."""
    if cfg.root is None:
        raise DataError("no dataset root configured (robot.data.root)")
    root = str(cfg.root)
    if root.startswith("gs://"):
        return (
            root if root.rstrip("/").endswith(cfg.version) else f"{root.rstrip('/')}/{cfg.name}/{cfg.version}"
        )
    p = Path(root).expanduser()
    for cand in (p, p / cfg.version, p / cfg.name / cfg.version):
        if (cand / "dataset_info.json").is_file():
            return str(cand)
    raise DataError(
        f"no RLDS dataset at {root}: expected dataset_info.json in it or in {cfg.name}/{cfg.version}/ below it"
    )


def _read_text(path: str) -> str:
    if path.startswith("gs://"):
        import tensorflow as tf

        return tf.io.gfile.GFile(path).read()
    return Path(path).read_text()


CACHE_FORMAT = 2  # 2: one cache episode per instruction segment; proprioception statistics


def source_hash(cfg: RobotDataConfig, image_size: int) -> str:
    """Cache version: the dataset's own metadata plus everything that changes the cached arrays."""
    d = dataset_dir(cfg)
    h = hashlib.sha256(_read_text(f"{d}/dataset_info.json").encode())
    h.update(
        json.dumps(
            {**asdict(cfg), "root": None, "image_size": image_size, "format": CACHE_FORMAT}, sort_keys=True
        ).encode()
    )
    return h.hexdigest()[:16]


def _feature_keys(features, prefix: str = "") -> dict[str, object]:
    """Flatten a tfds FeaturesDict into {'steps/observation/image': feature, ...}."""
    out = {}
    inner = getattr(features, "feature", features)  # Dataset(...) wraps its element features
    items = inner.items() if hasattr(inner, "items") else []
    for k, f in items:
        out[f"{prefix}{k}"] = f
        out.update(_feature_keys(f, f"{prefix}{k}/"))
    return out


def check_schema(cfg: RobotDataConfig, builder) -> None:
    keys = _feature_keys(builder.info.features)
    required = [f"steps/observation/{cfg.image_key}", f"steps/observation/{cfg.instruction_key}"]
    required += [f"steps/action/{k}" for k in [*cfg.action_keys, cfg.gripper_key]]
    required += [f"steps/observation/{k}" for k in cfg.proprio_keys]
    if cfg.embedding_key:
        required.append(f"steps/observation/{cfg.embedding_key}")
    if cfg.terminate_key:
        required.append(f"steps/action/{cfg.terminate_key}")
    missing = [k for k in required if k not in keys]
    if missing:
        raise DataError(
            f"dataset {builder.data_dir} lacks required key(s) {missing} (check robot.data.* keys)"
        )
    if len(cfg.action_dims) != len(cfg.action_keys):
        raise DataError(
            f"robot.data.action_dims {list(cfg.action_dims)} must give one size per action key {list(cfg.action_keys)}"
        )
    for key, size in zip(cfg.action_keys, cfg.action_dims, strict=True):
        declared = list(keys[f"steps/action/{key}"].shape)
        if declared and int(np.prod(declared)) != size:
            raise DataError(
                f"dataset {builder.data_dir}: steps/action/{key} has shape {declared}, robot.data.action_dims says {size}"
            )
    shape = list(keys[f"steps/observation/{cfg.image_key}"].shape)
    if cfg.image_shape and shape != list(cfg.image_shape):
        raise DataError(
            f"dataset {builder.data_dir}: steps/observation/{cfg.image_key} has shape {shape}, expected {list(cfg.image_shape)}"
        )


def standardize(cfg: RobotDataConfig, steps: dict, where: str) -> dict:
    """Numpy arrays of one episode's steps -> actions of `cfg.action_dim` (absolute gripper last), terminate,
    proprio."""
    obs, act = steps["observation"], steps["action"]
    t = len(obs[cfg.image_key])
    parts = [np.asarray(act[k], np.float32).reshape(t, -1) for k in cfg.action_keys]
    for key, part, size in zip(cfg.action_keys, parts, cfg.action_dims, strict=True):
        if part.shape[1] != size:
            raise DataError(
                f"{where}: action key {key!r} has {part.shape[1]} numbers per step, robot.data.action_dims says {size}"
            )
    grip = np.asarray(act[cfg.gripper_key], np.float32).reshape(t)
    if cfg.gripper == "relative":
        grip = rel2abs_gripper(grip)
    elif cfg.gripper == "absolute_closed1":
        grip = 1.0 - grip
    elif cfg.gripper != "absolute":
        raise DataError(f"robot.data.gripper={cfg.gripper!r}; use relative, absolute or absolute_closed1")
    actions = np.concatenate([*parts, grip[:, None]], axis=1)
    if not np.isfinite(actions).all():
        raise DataError(f"{where}: actions contain NaN or inf")
    if cfg.terminate_key:
        term = np.asarray(act[cfg.terminate_key]).reshape(t, -1)
        terminate = term[:, 0] > 0 if term.shape[1] > 1 else term[:, 0] > 0
    else:
        terminate = np.zeros(t, bool)
    proprio = np.concatenate(
        [np.asarray(obs[k], np.float32).reshape(t, -1) for k in cfg.proprio_keys], axis=1
    )
    return {"actions": actions, "terminate": terminate, "proprio": proprio}


def instruction_segments(texts: list[str]) -> list[tuple[int, int]]:
    """[start, end) step ranges with one instruction each. A multi-stage episode (SIMPLER's drawer + apple:
    "open top drawer" then "place apple into top drawer") becomes one cache episode per instruction, as the
    policy sees it: SIMPLER's loop resets the policy when the instruction changes."""
    if not texts:
        return [(0, 0)]
    cuts = [i for i in range(1, len(texts)) if texts[i] != texts[i - 1]]
    bounds = [0, *cuts, len(texts)]
    return list(zip(bounds[:-1], bounds[1:]))


def convert(cfg: RobotDataConfig, image_size: int, out_dir: str | Path, progress: bool = True) -> Path:
    """Read the RLDS dataset once with tfds and write the episode cache (atomically)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from tqdm import tqdm

    tf.config.set_visible_devices([], "GPU")
    d = dataset_dir(cfg)
    try:
        builder = tfds.builder_from_directory(d)
    except Exception as e:
        raise DataError(f"cannot open RLDS dataset {d}: {e}") from e
    check_schema(cfg, builder)
    ds = builder.as_dataset(split=cfg.split, shuffle_files=False)
    if cfg.max_episodes:
        ds = ds.take(cfg.max_episodes)
    meta = {"source": d, "config": asdict(cfg), "hash": source_hash(cfg, image_size)}
    writer = CacheWriter(out_dir, image_size, meta, action_dim=cfg.action_dim)
    try:
        total = builder.info.splits[cfg.split].num_examples
        for e, episode in enumerate(
            tqdm(ds, total=min(total, cfg.max_episodes or total), desc="rlds -> cache", disable=not progress)
        ):
            where = f"{d} episode {e}"
            steps = next(iter(episode["steps"].batch(1 << 16)))
            obs = steps["observation"]
            images = obs[cfg.image_key]
            rows, cols = crop_window(int(images.shape[1]), int(images.shape[2]), cfg.crop)
            images = tf.image.resize(images[:, rows, cols], (image_size, image_size), method="area")
            frames = tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8).numpy()
            arrays = tf.nest.map_structure(
                lambda x: x.numpy(), {"observation": dict(obs), "action": dict(steps["action"])}
            )
            std = standardize(cfg, arrays, where)
            texts = [t.decode() for t in arrays["observation"][cfg.instruction_key]]
            for a, b in instruction_segments(texts):
                if cfg.embedding_key:
                    embedding = arrays["observation"][cfg.embedding_key][a]
                else:
                    from worldflow.language import language_embedding

                    embedding = language_embedding(texts[a])
                writer.add(
                    frames[a:b],
                    std["actions"][a:b],
                    std["terminate"][a:b],
                    std["proprio"][a:b],
                    texts[a],
                    embedding,
                )
    except tf.errors.OpError as e:
        writer.abort()
        raise DataError(
            f"reading RLDS dataset {d} failed (corrupt or unreadable shard?): {e.message.splitlines()[0]}"
        ) from e
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def open_cache(
    cfg: RobotDataConfig, image_size: int, cache_root: str | Path, progress: bool = True
) -> EpisodeCache:
    """The cache for this dataset and image size: built once, then reused (keyed by the source hash)."""
    if cfg.crop is not None:
        check_crop(cfg.crop)  # a bad box fails before anything is read or written
    path = Path(cache_root) / f"{cfg.name}-{cfg.version}-{image_size}px-{source_hash(cfg, image_size)}"
    if not (path / "meta.json").is_file():
        print(f"building episode cache {path} from {dataset_dir(cfg)} (once)")
        convert(cfg, image_size, path, progress)
    return EpisodeCache(path)
