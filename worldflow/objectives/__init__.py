"""Training objectives: each a module called as `objective(model, teacher, batch) -> (loss, metrics)`.

Trainable parts of an objective (Self-Flow's projection head, REPA's projector) are its parameters and
are optimised and checkpointed with the model; `needs_teacher` tells the loop to pass the EMA model.
"""

from __future__ import annotations

from dataclasses import fields

from omegaconf import OmegaConf

from worldflow.errors import ConfigError
from worldflow.objectives.repa import Repa, RepaConfig
from worldflow.objectives.selfflow import SelfFlow, SelfFlowConfig
from worldflow.objectives.vanilla import VanillaConfig, VanillaFlow

OBJECTIVES = {
    "vanilla": (VanillaConfig, VanillaFlow),
    "selfflow": (SelfFlowConfig, SelfFlow),
    "repa": (RepaConfig, Repa),
}


def objective_config(cfg) -> object:
    """A dict/DictConfig with a `name` -> the typed config of that objective; unknown keys fail by name."""
    name = cfg.get("name") if hasattr(cfg, "get") else getattr(cfg, "name", None)
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    schema = OBJECTIVES[name][0]
    if isinstance(cfg, schema):
        return cfg
    known = {f.name for f in fields(schema)}
    for key in cfg:
        if key not in known:
            raise ConfigError(
                f"unknown key objective.{key} for objective={name}; known keys: {sorted(known)}"
            )
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg))


def build_objective(cfg, model):
    typed = objective_config(cfg)
    return OBJECTIVES[typed.name][1](typed, model)
