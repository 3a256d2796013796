"""python -m worldflow.pretrain [debug=cpu] [model=S] [data=moving_shapes|synthetic_images|...] [objective=selfflow|vanilla|repa]

Pretrains the backbone on images or video; writes checkpoints, metrics.jsonl and samples to run_dir.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from worldflow.config import CONFIG_DIR, PretrainConfig, entry_point, launch, run_meta, typed
from worldflow.data import build_dataset
from worldflow.errors import ConfigError
from worldflow.generate import generate, write_samples
from worldflow.model.dit import DiT, config_for_data
from worldflow.objectives import build_objective, objective_config


def sampler(cfg: PretrainConfig):
    def fn(ema, step: int, run_dir: Path) -> None:
        s = cfg.sample
        out = generate(
            ema,
            s.num,
            steps=s.steps,
            method=s.method,
            cfg_scale=s.cfg_scale,
            cfg_interval=tuple(s.cfg_interval),
            seed=s.seed,
        )
        path = write_samples(out.float().cpu(), run_dir / "samples" / f"step_{step:07d}")
        print(f"samples: {path}")

    return fn


def run(cfg: PretrainConfig, raw: dict) -> dict:
    if cfg.data.image_size != cfg.image_size:
        raise ConfigError(
            f"data.image_size={cfg.data.image_size} differs from image_size={cfg.image_size}: set image_size="
        )
    dataset = build_dataset(cfg.data)
    shape = tuple(dataset.sample_shape)
    model_cfg = config_for_data(cfg.model, shape, dataset.num_classes)
    model = DiT(model_cfg)
    objective = build_objective(cfg.objective, model)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"pretrain: data={cfg.data.name} {shape} x {len(dataset)}, model={model_cfg.size} ({n_params / 1e6:.1f}M params, "
        f"{model.num_tokens} tokens), objective={cfg.objective['name']}, run_dir={cfg.run_dir}"
    )
    meta = run_meta("pretrain", model_cfg, cfg.objective, raw)
    return launch(cfg, raw, model, objective, dataset, meta, sampler(cfg))


# the YAML files set only what differs from the dataclass, which Hydra sees as the schema
ConfigStore.instance().store(name="pretrain_schema", node=PretrainConfig)


@hydra.main(config_path=CONFIG_DIR, config_name="pretrain", version_base="1.3")
@entry_point
def main(raw: DictConfig) -> None:
    cfg = typed(PretrainConfig, raw, ignore=("objective",))
    objective_config(cfg.objective)  # fail on a bad objective key before loading data
    last = run(cfg, OmegaConf.to_container(raw, resolve=True))
    print(f"done: step {last.get('step')} loss {last.get('loss', float('nan')):.4f} -> {cfg.run_dir}")


if __name__ == "__main__":
    sys.exit(main())
