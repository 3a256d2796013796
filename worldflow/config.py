"""Typed configs behind the Hydra YAML groups in `configs/`: a misspelt key fails at start with its name.

Hydra composes the YAML files; `typed()` checks every key against the dataclasses and returns objects.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from worldflow.data import DataConfig
from worldflow.errors import ConfigError, WorldflowError
from worldflow.model.dit import ModelConfig
from worldflow.train import TrainConfig

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


@dataclass
class LoggerConfig:
    kind: str = "console"  # console | wandb (metrics.jsonl is always written)
    project: str = "worldflow"
    mode: str = "offline"  # wandb mode; offline works without network


@dataclass
class SampleConfig:
    num: int = 16
    steps: int = 30
    method: str = "euler"  # euler | heun | sde
    cfg_scale: float = 1.0
    cfg_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])
    seed: int = 0


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: Any = None  # validated by worldflow.objectives.objective_config
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    image_size: int = 32  # sets data.image_size
    run_dir: str = "runs/pretrain"
    resume: bool = False
    init_from: str | None = None
    expected_missing: list[str] = field(default_factory=list)


def check_keys(schema, node, path: str = "") -> None:
    """Raise ConfigError naming the first key of `node` that `schema` (a dataclass) does not have."""
    if not isinstance(node, (dict, DictConfig)):
        return
    known = {f.name: f for f in dataclasses.fields(schema)}
    for key in node:
        name = f"{path}{key}"
        if key not in known:
            raise ConfigError(f"unknown config key {name!r}; known keys here: {sorted(known)}")
        sub = known[key].default_factory
        if sub is not dataclasses.MISSING and dataclasses.is_dataclass(sub):
            check_keys(sub, node[key], f"{name}.")


def typed(schema, node: DictConfig, ignore: tuple[str, ...] = ()):
    """DictConfig -> dataclass instance of `schema`; keys in `ignore` are kept as plain containers."""
    check_keys(schema, node)
    plain = {
        k: OmegaConf.to_container(node[k], resolve=True) if isinstance(node[k], DictConfig) else node[k]
        for k in ignore
        if k in node
    }
    rest = OmegaConf.masked_copy(node, [k for k in node if k not in ignore])
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), rest))
    except Exception as e:  # omegaconf's validation errors name the key and the bad value
        raise ConfigError(f"invalid config: {e}") from e
    for k, v in plain.items():
        setattr(obj, k, v)
    return obj


def entry_point(fn):
    """Wrap a Hydra main: a user mistake prints one clear line and exits with status 2; Ctrl-C exits with 130."""

    @functools.wraps(fn)
    def wrapper(cfg):
        try:
            return fn(cfg)
        except WorldflowError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            # Ctrl-C: what was running has cleaned up (training wrote a checkpoint); no traceback
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


def run_meta(kind: str, model_cfg, objective: dict, raw: dict, **extra) -> dict:
    """What every checkpoint of an entry point records beside the weights (meta.json)."""
    import torch

    import worldflow

    return {
        "kind": kind,
        "worldflow": worldflow.__version__,
        "torch": torch.__version__,
        "model": dataclasses.asdict(model_cfg),
        "objective": objective,
        **extra,
        "config": raw,
    }


def launch(cfg, raw: dict, model, objective, dataset, meta: dict, sample_fn, init_drop=()) -> dict:
    """The entry points' one call of the training loop, from the fields they share: train, run_dir,
    resume, init_from, expected_missing and logger (metrics.jsonl, and wandb with logger=wandb)."""
    from worldflow.logger import MetricLogger
    from worldflow.train import train

    wandb = dataclasses.asdict(cfg.logger) if cfg.logger.kind == "wandb" else None
    return train(
        model, objective, dataset, cfg.train, cfg.run_dir, meta, resume=cfg.resume, init_from=cfg.init_from,
        expected_missing=cfg.expected_missing, init_drop=list(init_drop), sample_fn=sample_fn,
        logger=MetricLogger(cfg.run_dir, wandb=wandb, config=raw),
    )  # fmt: skip
