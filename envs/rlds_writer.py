"""Write episodes as an RLDS dataset with RT-1's exact schema (`fractal20220817_data` 0.1.0, DESIGN.md §3).

The folder `out_dir/<name>/<version>/` holds `dataset_info.json`, `features.json` and shards
`<name>-train.tfrecord-NNNNN-of-MMMMM`, so `tfds.builder_from_directory` reads it exactly like a local copy
of the real dataset (one reader, `worldflow.data.rlds`). No builder class is needed: each episode is
serialised with the `FeaturesDict`, streamed to TFRecord shards, and the metadata is written at the end with
`tfds.folder_dataset.write_metadata` (the "external TFRecord" recipe of the TFDS docs). Since the episode
count is unknown up front, shards are named `-NNNNN` while writing and renamed `-of-MMMMM` at the end.

Atomic like `worldflow.ckpt`: everything goes to a hidden sibling `.<version>.incomplete-*` folder that is
renamed to `<version>` only when complete, so a crash never leaves a folder that looks like a dataset.

TensorFlow is imported lazily, only while writing or reading.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from worldflow.errors import DataError
from worldflow.language import EMBEDDING_DIM, EMBEDDING_NAME, language_embedding
from worldflow.worldmodel.robot import rt1_proprio

RT1_NAME = "fractal20220817_data"
RT1_VERSION = "0.1.0"
RT1_IMAGE_SIZE = (256, 320)  # (H, W) of RT-1's head camera

# float32 per-step arrays of the schema by shape (image, instruction and terminate_episode are separate).
# Episodes must give the first two observation keys; the others default to `_default_observations`.
OBSERVATION_SHAPES = {
    "base_pose_tool_reached": (7,),
    "gripper_closed": (1,),
    "gripper_closedness_commanded": (1,),
    "height_to_bottom": (1,),
    "natural_language_embedding": (EMBEDDING_DIM,),
    "orientation_box": (2, 3),
    "orientation_start": (4,),
    "robot_orientation_positions_box": (3, 3),
    "rotation_delta_to_go": (3,),
    "src_rotation": (4,),
    "vector_to_go": (3,),
    "workspace_bounds": (3, 3),
}
OPTIONAL_OBSERVATIONS = tuple(sorted(set(OBSERVATION_SHAPES) - {"base_pose_tool_reached", "gripper_closed"}))
ACTION_SHAPES = {
    "world_vector": (3,),
    "rotation_delta": (3,),
    "gripper_closedness_action": (1,),
    "base_displacement_vector": (2,),  # RT-1's mobile base: unused, zeros
    "base_displacement_vertical_rotation": (1,),
}
TERMINATE = np.array([1, 0, 0], np.int32)  # terminate_episode one-hot, as RT-1
CONTINUE = np.array([0, 1, 0], np.int32)


@dataclass
class Episode:
    """One episode in memory; step t is the observation before action t (the RLDS convention)."""

    image: np.ndarray  # (T, H, W, 3) uint8, H x W = 256 x 320 for RT-1
    instruction: str | Sequence[str]  # one, or one per step (SIMPLER's two-stage tasks change it)
    base_pose_tool_reached: np.ndarray  # (T, 7) EE xyz + quaternion (x, y, z, w), base frame
    gripper_closed: np.ndarray  # (T, 1) 1 closed, 0 open
    world_vector: np.ndarray  # (T, 3) EE translation delta
    rotation_delta: np.ndarray  # (T, 3) axis-angle delta
    gripper_closedness_action: np.ndarray  # (T, 1) relative: +1 close, -1 open, 0 none
    terminate_episode: np.ndarray  # (T, 3) int one-hot: [1,0,0] terminate (last step), [0,1,0] otherwise
    reward: np.ndarray  # (T,)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # OPTIONAL_OBSERVATIONS keys, (T, ...)


def _as_episode(item: Episode | Mapping, where: str) -> Episode:
    if isinstance(item, Episode):
        return item
    if not isinstance(item, Mapping):
        raise DataError(f"{where}: expected an Episode or a dict, got {type(item).__name__}")
    names = [f.name for f in fields(Episode)]
    missing = [n for n in names if n not in item and n != "extras"]
    unknown = [k for k in item if k not in names]
    if missing or unknown:
        raise DataError(f"{where}: missing key(s) {missing}, unknown key(s) {unknown}; expected {names}")
    return Episode(**item)


_KINDS = {"uint8": "u", "float": "fiu", "integer": "biu", "number": "fiub"}  # accepted numpy dtype kinds


def _array(value, name: str, where: str, shape: tuple, want: str) -> np.ndarray:
    """`value` as an array of exactly `shape` and dtype class `want` (_KINDS), else a DataError naming it."""
    a = np.asarray(value)
    ok = a.dtype == np.uint8 if want == "uint8" else a.dtype.kind in _KINDS[want]
    if a.shape != shape or not ok:
        raise DataError(f"{where}: {name} has shape {a.shape} dtype {a.dtype}, expected {shape} {want}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataError(f"{where}: {name} contains NaN or inf")
    return a


def _commanded_closedness(gripper_action: np.ndarray, initial: float) -> np.ndarray:
    """(T,) the latched gripper command before each step: +1 closes, -1 opens, 0 keeps (RT-1's semantics)."""
    state, out = initial, np.empty(len(gripper_action), np.float32)
    for t, a in enumerate(gripper_action):
        out[t] = state
        state = 1.0 if a > 0 else 0.0 if a < 0 else state
    return out


def _default_observations(
    base_pose: np.ndarray, gripper_closed: np.ndarray, gripper_action: np.ndarray, t: int
):
    """Sensible values for RT-1's observation keys the CPU suite has no source for."""
    out = {k: np.zeros((t, *OBSERVATION_SHAPES[k]), np.float32) for k in OPTIONAL_OBSERVATIONS}
    out["orientation_start"][:] = base_pose[0, 3:7]
    out["gripper_closedness_commanded"][:, 0] = _commanded_closedness(
        gripper_action[:, 0], gripper_closed[0, 0]
    )
    return out


def validate_episode(
    item: Episode | Mapping, index: int, image_size: tuple[int, int] = RT1_IMAGE_SIZE
) -> dict:
    """Check one episode and return its `steps` as the nested dict of stacked arrays the features encode."""
    where = f"episode {index}"
    ep = _as_episode(item, where)
    image = np.asarray(ep.image)
    if image.ndim == 4 and len(image) == 0:
        raise DataError(f"{where}: no steps (image has shape {image.shape})")
    t = len(image) if image.ndim == 4 else 1  # T: the image's length; other arrays must match it
    image = _array(image, "image", where, (t, *image_size, 3), "uint8")
    texts = [ep.instruction] * t if isinstance(ep.instruction, str) else list(ep.instruction)
    if len(texts) != t or not all(isinstance(s, str) for s in texts):
        raise DataError(
            f"{where}: instruction must be a str or {t} str (one per step), got {ep.instruction!r:.80}"
        )
    f32 = lambda name, shape: _array(getattr(ep, name), name, where, (t, *shape), "float").astype(np.float32)
    actions = {
        k: f32(k, ACTION_SHAPES[k]) for k in ("world_vector", "rotation_delta", "gripper_closedness_action")
    }
    actions |= {k: np.zeros((t, *ACTION_SHAPES[k]), np.float32) for k in ACTION_SHAPES if k not in actions}
    terminate = _array(ep.terminate_episode, "terminate_episode", where, (t, 3), "integer")
    if not (np.isin(terminate, (0, 1)).all() and (terminate.sum(1) == 1).all()):
        raise DataError(f"{where}: terminate_episode rows must be one-hot, e.g. [1,0,0] or [0,1,0]")
    actions["terminate_episode"] = terminate.astype(np.int32)
    obs = {k: f32(k, OBSERVATION_SHAPES[k]) for k in ("base_pose_tool_reached", "gripper_closed")}
    obs |= _default_observations(
        obs["base_pose_tool_reached"], obs["gripper_closed"], actions["gripper_closedness_action"], t
    )
    unique = {s: language_embedding(s) for s in dict.fromkeys(texts)}
    obs["natural_language_embedding"] = np.stack([unique[s] for s in texts])
    for k, v in ep.extras.items():
        if k not in OPTIONAL_OBSERVATIONS:
            raise DataError(
                f"{where}: extras key {k!r} is not an RT-1 observation; known: {list(OPTIONAL_OBSERVATIONS)}"
            )
        obs[k] = _array(v, f"extras[{k!r}]", where, (t, *OBSERVATION_SHAPES[k]), "float").astype(np.float32)
    obs["image"], obs["natural_language_instruction"] = image, texts
    reward = _array(ep.reward, "reward", where, (t,), "number").astype(np.float32)
    last = np.arange(t) == t - 1
    return {
        "observation": obs,
        "action": actions,
        "reward": reward,
        "is_first": np.arange(t) == 0,
        "is_last": last,
        "is_terminal": last,
    }


def rt1_features(image_size: tuple[int, int] = RT1_IMAGE_SIZE):
    """The `tfds.features.FeaturesDict` of `fractal20220817_data` 0.1.0 (no `discount`, no metadata)."""
    _, tfds = _import_tf()
    F = tfds.features
    vec = lambda shape, doc="": F.Tensor(shape=shape, dtype=np.float32, doc=doc)
    observation = {k: vec(s) for k, s in OBSERVATION_SHAPES.items()}
    observation["image"] = F.Image(
        shape=(*image_size, 3), dtype=np.uint8, encoding_format="jpeg", doc="head camera"
    )
    observation["natural_language_instruction"] = F.Text()
    observation["natural_language_embedding"] = vec(
        (EMBEDDING_DIM,), f"{EMBEDDING_NAME} (not USE), worldflow/language.py"
    )
    action = {k: vec(s) for k, s in ACTION_SHAPES.items()}
    action["terminate_episode"] = F.Tensor(shape=(3,), dtype=np.int32, doc="one-hot: [1,0,0] terminate")
    step = {
        "observation": F.FeaturesDict(observation),
        "action": F.FeaturesDict(action),
        "reward": F.Scalar(dtype=np.float32),
        "is_first": F.Scalar(dtype=np.bool_),
        "is_last": F.Scalar(dtype=np.bool_),
        "is_terminal": F.Scalar(dtype=np.bool_),
    }
    return F.FeaturesDict({"steps": F.Dataset(step)})


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    with contextlib.suppress(RuntimeError):  # RuntimeError: devices already initialised by an earlier call
        tf.config.set_visible_devices([], "GPU")  # TF only encodes and decodes here; leave the GPU to torch
    return tf, tfds


class RT1Writer:
    """Streams validated episodes into TFRecord shards of a hidden folder; `finish()` publishes it atomically."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        name: str = RT1_NAME,
        version: str = RT1_VERSION,
        image_size: tuple[int, int] = RT1_IMAGE_SIZE,
        shard_size: int = 64,
        overwrite: bool = False,
        description: str = "",
        resumable: str | None = None,
    ):
        """resumable: a recipe (any string naming what is being written). The hidden folder then has a fixed
        name and a journal of the closed shards, so a writer with the same recipe started after a crash or
        `kill -9` keeps those shards and `resumed` holds the marker passed with the last episode they hold;
        a different recipe starts afresh."""
        if shard_size < 1:
            raise DataError(f"shard_size must be >= 1 episodes, got {shard_size}")
        self.final = Path(out_dir) / name / version
        self.name, self.version, self.image_size = name, version, tuple(image_size)
        self.shard_size, self.overwrite, self.description = shard_size, overwrite, description
        self._check_free()
        self.tf, _ = _import_tf()
        self.features = rt1_features(self.image_size)
        self.recipe = resumable
        suffix = "incomplete" if resumable else f"incomplete-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp = self.final.with_name(f".{version}.{suffix}")
        missing = [p for p in self.tmp.parents if not p.exists()]
        self._created = missing  # the folders abort() removes again (innermost first), if still empty
        self.shard_lengths: list[int] = []
        self.episodes = self.steps = 0
        self.resumed = None
        if resumable:
            self._continue()
        try:
            self.tmp.mkdir(parents=True, exist_ok=bool(resumable))
        except OSError as e:
            raise DataError(f"cannot write an RLDS dataset in {out_dir}: {e}") from e
        self._record_writer = None
        self._t0 = time.perf_counter()

    @property
    def _journal(self) -> Path:
        return self.tmp / "journal.json"

    def _continue(self) -> None:
        """Keep the journaled shards of an interrupted writer with the same recipe; drop everything else."""
        try:
            journal = json.loads(self._journal.read_text())
        except (OSError, ValueError):
            journal = None
        if journal is None or journal.get("recipe") != self.recipe:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        self.shard_lengths = list(journal["shard_lengths"])
        self.episodes, self.steps, self.resumed = journal["episodes"], journal["steps"], journal["marker"]
        keep = {self._shard_path(i).name for i in range(len(self.shard_lengths))} | {self._journal.name}
        for file in self.tmp.iterdir():
            if file.name not in keep:  # a shard being written at the kill
                file.unlink()

    def _write_journal(self, marker) -> None:
        state = {
            "recipe": self.recipe,
            "shard_lengths": self.shard_lengths,
            "episodes": self.episodes,
            "steps": self.steps,
            "marker": marker,
        }
        tmp = self._journal.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self._journal)

    def _check_free(self) -> None:
        if self.final.exists() and not self.overwrite:
            raise DataError(
                f"an RLDS dataset already exists at {self.final}; pass overwrite=True to replace it"
            )

    def _shard_path(self, index: int, count: int | None = None) -> Path:
        suffix = f"{index:05d}" if count is None else f"{index:05d}-of-{count:05d}"
        return self.tmp / f"{self.name}-train.tfrecord-{suffix}"

    def add(self, episode: Episode | Mapping, marker=None) -> None:
        """Append one episode. `marker` (JSON-serialisable) says how far the caller had got; with `resumable`
        it is journaled whenever a shard is complete and comes back as `resumed` after a restart."""
        steps = validate_episode(episode, self.episodes, self.image_size)
        record = self.features.serialize_example({"steps": steps})
        if self._record_writer is None or self.shard_lengths[-1] == self.shard_size:
            self._close_shard()
            self._record_writer = self.tf.io.TFRecordWriter(str(self._shard_path(len(self.shard_lengths))))
            self.shard_lengths.append(0)
        self._record_writer.write(record)
        self.shard_lengths[-1] += 1
        self.episodes += 1
        self.steps += len(steps["reward"])
        if self.recipe and self.shard_lengths[-1] == self.shard_size:
            self._close_shard()
            self._write_journal(marker)

    def _close_shard(self) -> None:
        if self._record_writer is not None:
            self._record_writer.close()
            self._record_writer = None
            if self.recipe:
                with open(self._shard_path(len(self.shard_lengths) - 1), "rb") as f:
                    os.fsync(f.fileno())

    def abort(self) -> None:
        """Remove everything this writer created; an existing dataset at the destination is untouched.
        A resumable writer keeps its journaled shards for the next run with the same recipe."""
        self._close_shard()
        if self.recipe and self._journal.exists():
            return
        shutil.rmtree(self.tmp, ignore_errors=True)
        for folder in self._created:
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break

    def report(self, path: Path) -> str:
        s = self.stats
        return f"wrote {s['episodes']} episodes, {s['steps']} steps, {s['bytes'] / 2**20:.1f} MiB in {s['seconds']:.1f} s to {path}"

    @property
    def stats(self) -> dict:
        size = sum(p.stat().st_size for p in (self.final if self.final.is_dir() else self.tmp).iterdir())
        seconds = round(time.perf_counter() - self._t0, 3)
        return {"episodes": self.episodes, "steps": self.steps, "bytes": size, "seconds": seconds}

    def finish(self) -> Path:
        """Name the shards -of-MMMMM, write dataset_info.json and features.json, rename into place."""
        _, tfds = _import_tf()
        self._close_shard()
        if not self.episodes:
            self.abort()
            raise DataError(f"no episodes to write to {self.final}")
        count = len(self.shard_lengths)
        self._journal.unlink(missing_ok=True)
        for i in range(count):
            self._shard_path(i).rename(self._shard_path(i, count))
        num_bytes = sum(self._shard_path(i, count).stat().st_size for i in range(count))
        split = tfds.core.SplitInfo(name="train", shard_lengths=list(self.shard_lengths), num_bytes=num_bytes)
        about = (
            f"RT-1 schema ({RT1_NAME} {RT1_VERSION}) written by worldflow (envs/rlds_writer.py). "
            f"natural_language_embedding is {EMBEDDING_NAME} (worldflow/language.py), not the Universal Sentence "
            f"Encoder: do not mix with real RT-1 embeddings. {self.description}"
        )
        tfds.folder_dataset.write_metadata(
            data_dir=self.tmp, features=self.features, split_infos=[split], version=self.version,
            check_data=False, description=about.strip(),
        )  # fmt: skip
        for file in self.tmp.iterdir():  # on disk before the rename publishes them (as worldflow.ckpt)
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        self._check_free()
        old = self.final.with_name(f".{self.version}.replaced-{uuid.uuid4().hex[:8]}")
        if self.final.exists():
            self.final.rename(old)
        self.tmp.rename(self.final)
        shutil.rmtree(old, ignore_errors=True)
        return self.final


def write_rt1_dataset(
    episodes: Iterable[Episode | Mapping],
    out_dir: str | Path,
    *,
    name: str = RT1_NAME,
    version: str = RT1_VERSION,
    image_size: tuple[int, int] = RT1_IMAGE_SIZE,
    shard_size: int = 64,
    overwrite: bool = False,
    description: str = "",
    progress: bool = True,
) -> Path:
    """Stream `episodes` into `out_dir/<name>/<version>/` (atomically); returns that folder.

    Episodes are consumed one at a time (a generator keeps memory flat); any error, including one raised by
    the iterable itself, removes the partial output and re-raises. Prints the episodes, steps and bytes
    written; `RT1Writer(...).stats` gives them as a dict to callers that drive the writer themselves.
    """
    from tqdm import tqdm

    writer = RT1Writer(
        out_dir, name=name, version=version, image_size=image_size, shard_size=shard_size,
        overwrite=overwrite, description=description,
    )  # fmt: skip
    try:
        total = len(episodes) if hasattr(episodes, "__len__") else None
        with tqdm(episodes, total=total, desc=f"writing {name}", unit="ep", disable=not progress) as bar:
            for episode in bar:
                writer.add(episode)
                bar.set_postfix(steps=writer.steps)
        path = writer.finish()
    except BaseException:
        writer.abort()
        raise
    print(writer.report(path))
    return path


def read_rt1_episodes(path: str | Path, split: str = "train") -> Iterator[dict]:
    """Episodes of an RLDS dataset folder as nested numpy dicts of stacked steps (a minimal reader for checks).

    `path` is the `<version>` folder (holding dataset_info.json) or the root above `<name>/<version>`.
    Keys mirror the schema: {"observation": {...}, "action": {...}, "reward", "is_first", ...}; strings are
    decoded to `str`.
    """
    tf, tfds = _import_tf()
    folder = Path(path)
    if not (folder / "dataset_info.json").is_file():
        folder = folder / RT1_NAME / RT1_VERSION
    if not (folder / "dataset_info.json").is_file():
        raise DataError(
            f"no RLDS dataset at {path}: no dataset_info.json in it or in {RT1_NAME}/{RT1_VERSION}/"
        )
    builder = tfds.builder_from_directory(str(folder))
    for episode in builder.as_dataset(split=split, shuffle_files=False):
        steps = next(iter(episode["steps"].batch(1 << 16)))  # one batch holds a whole episode
        yield tf.nest.map_structure(_to_numpy, dict(steps))


def _to_numpy(tensor) -> np.ndarray | list[str]:
    if tensor.dtype == "string":
        return [s.decode() for s in tensor.numpy()]
    return tensor.numpy()


def episode_from_rollout(
    frames: Sequence[np.ndarray],
    proprios: np.ndarray,
    actions: np.ndarray,
    terminates: Sequence[bool],
    instruction: str | Sequence[str],
    *,
    success: bool = True,
) -> Episode:
    """One CPU-suite rollout -> an RT-1 Episode.

    frames[t] (H, W, 3) uint8 and proprios[t] (8,) = xyz, quaternion, gripper closedness are the observation
    before actions[t] (7,) = translation ‖ axis-angle ‖ relative gripper; terminates[t] is the expert's flag.
    terminate_episode is [1,0,0] where terminate was signalled and on the last step, [0,1,0] elsewhere;
    reward is 1 on the last step of a successful episode (as RT-1), else 0.
    """
    t = len(frames)
    checks = {"proprios": (np.asarray(proprios), 8), "actions": (np.asarray(actions), 7)}
    for arg, (a, width) in checks.items():
        if a.shape != (t, width):
            raise DataError(
                f"episode_from_rollout: {arg} has shape {a.shape}, expected ({t}, {width}) for {t} frames"
            )
    if t == 0 or len(terminates) != t:
        raise DataError(
            f"episode_from_rollout: {t} frames and {len(terminates)} terminate flags; need >= 1, equal"
        )
    proprio, action = (checks[k][0].astype(np.float32) for k in ("proprios", "actions"))
    rt1 = rt1_proprio(proprio)
    terminate = np.asarray(terminates, bool).copy()
    terminate[-1] = True
    reward = np.zeros(t, np.float32)
    reward[-1] = float(success)
    return Episode(
        image=np.stack(frames),
        instruction=instruction if isinstance(instruction, str) else list(instruction),
        base_pose_tool_reached=rt1[:, :7],
        gripper_closed=rt1[:, 7:8],
        world_vector=action[:, :3],
        rotation_delta=action[:, 3:6],
        gripper_closedness_action=action[:, 6:7],
        terminate_episode=np.where(terminate[:, None], TERMINATE, CONTINUE),
        reward=reward,
    )
