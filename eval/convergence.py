"""python eval/convergence.py [methods=[vanilla,repa,selfflow]] [ablations=[no_rep,no_dual,teacher_student,attn_sep]]
                           [seeds=[0,1,2]] [out_dir=runs/convergence]   (--config-name convergence_gpu for the GPU size)

The convergence study of DESIGN.md §6: the same model, data, compute and seeds for every method; the EMA
weights are evaluated every `eval.every` steps (domain FD of samples, linear-probe accuracy of a block's
features); writes results.csv, curves.png and table.md (with steps to reach vanilla's final FD) to out_dir.
Finished runs are skipped when the command is run again.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from worldflow.config import CONFIG_DIR, entry_point, typed
from worldflow.data import DataConfig, build_dataset, stack
from worldflow.encoders import save_encoder
from worldflow.errors import ConfigError
from worldflow.generate import generate
from worldflow.logger import read_metrics
from worldflow.metrics.convergence import mean_std, steps_to_reach
from worldflow.metrics.fd import DomainEncoderConfig, DomainFD, train_domain_encoder
from worldflow.metrics.probe import block_features, linear_probe
from worldflow.model.dit import DiT, ModelConfig, config_for_data
from worldflow.model.sizes import default_blocks
from worldflow.objectives import build_objective
from worldflow.train import TrainConfig, train

# Each method is an objective config; ablations are Self-Flow with one part changed (DESIGN.md §6).
METHODS = {
    "vanilla": {"name": "vanilla"},
    "repa": {"name": "repa"},
    "selfflow": {"name": "selfflow"},
    "no_rep": {"name": "selfflow", "rep_loss": False},
    "no_dual": {"name": "selfflow", "dual_timesteps": False},
    "teacher_student": {"name": "selfflow", "teacher_timesteps": "student"},
    "attn_sep": {"name": "selfflow", "attention_separation": True},
}


@dataclass
class EvalConfig:
    every: int = 250
    samples: int = 512
    sample_steps: int = 20
    real: int = 2048
    probe_train: int = 1024
    probe_test: int = 512
    probe_block: int = 0  # 0: the Self-Flow student block round(0.3·depth)


@dataclass
class StudyConfig:
    out_dir: str = "runs/convergence"
    methods: list[str] = field(default_factory=lambda: ["vanilla", "repa", "selfflow"])
    ablations: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    domain_encoder: DomainEncoderConfig = field(default_factory=DomainEncoderConfig)
    repa_projector_dim: int = 256


FIELDS = ["method", "seed", "step", "fd", "probe_acc", "loss"]


def append_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return [
            {
                **r,
                "seed": int(r["seed"]),
                "step": int(r["step"]),
                "fd": float(r["fd"]),
                "probe_acc": float(r["probe_acc"]),
            }
            for r in csv.DictReader(f)
        ]


def run_study(cfg: StudyConfig) -> dict:
    names = cfg.methods + cfg.ablations
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method/ablation {unknown}; choose from {list(METHODS)}")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = build_dataset(cfg.data)
    n_real, ev = cfg.eval.real, cfg.eval
    if len(data) < n_real + ev.probe_train + ev.probe_test:
        raise ConfigError(
            f"data.num_samples={len(data)} is smaller than eval.real + probe_train + probe_test"
        )
    real_x, real_y = stack(data, range(n_real))
    fd = DomainFD(real_x, real_y if data.num_classes else None, out / "cache", cfg.domain_encoder)
    print(f"domain FD encoder: {fd.path}")
    probe_x, probe_y = stack(data, range(n_real, n_real + ev.probe_train + ev.probe_test))
    # REPA's "external" encoder: trained like the FD encoder but on other images and another seed, so the
    # metric does not share weights with one method's target (DINOv2 stands in this way at CPU scale).
    repa_path = out / "cache" / "repa_encoder.safetensors"
    if "repa" in names and not repa_path.exists():
        enc_cfg = dataclasses.replace(cfg.domain_encoder, seed=cfg.domain_encoder.seed + 1000)
        save_encoder(train_domain_encoder(probe_x, probe_y if data.num_classes else None, enc_cfg), repa_path)
    csv_path = out / "results.csv"
    done = {(r["method"], r["seed"]) for r in read_rows(csv_path) if r["step"] == cfg.train.steps}
    shape = tuple(data.sample_shape)
    for name in names:
        for seed in cfg.seeds:
            if (name, seed) in done:
                print(f"{name} seed {seed}: done, skipped")
                continue
            run_dir = out / "runs" / f"{name}_s{seed}"
            rows = [r for r in read_rows(csv_path) if not (r["method"] == name and r["seed"] == seed)]
            _rewrite(csv_path, rows)  # a run cut short starts again from scratch
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            torch.manual_seed(seed)
            model_cfg = config_for_data(cfg.model, shape, data.num_classes)
            model = DiT(model_cfg)
            obj_cfg = dict(METHODS[name])
            if obj_cfg["name"] == "repa":
                obj_cfg.update(encoder=str(repa_path), projector_dim=cfg.repa_projector_dim)
            objective = build_objective(obj_cfg, model)
            block = ev.probe_block or default_blocks(model.depth)[0]

            def evaluate(ema, step, run_dir, name=name, seed=seed, block=block):
                samples = generate(ema, ev.samples, steps=ev.sample_steps, seed=seed)
                feats = block_features(ema, probe_x, block)
                k = ev.probe_train
                acc = linear_probe(feats[:k], probe_y[:k], feats[k:], probe_y[k:])
                logged = read_metrics(run_dir / "metrics.jsonl")
                last = logged[-1] if logged else {}
                row = {
                    "method": name,
                    "seed": seed,
                    "step": step,
                    "fd": fd(samples.cpu()),
                    "probe_acc": acc,
                    "loss": last.get("loss_flow", ""),
                }
                append_row(csv_path, row)
                print(f"  {name} seed {seed} step {step}: FD {row['fd']:.3f} probe {acc:.3f}")

            train_cfg = dataclasses.replace(cfg.train, seed=seed, sample_every=ev.every, ckpt_every=0)
            print(f"{name} seed {seed}: training {cfg.train.steps} steps")
            train(
                model,
                objective,
                data,
                train_cfg,
                run_dir,
                {"model": dataclasses.asdict(model_cfg), "objective": obj_cfg},
                sample_fn=evaluate,
            )
    rows = read_rows(csv_path)
    summary = summarize(rows, names, cfg.train.steps)
    write_table(summary, out / "table.md", cfg)
    plot_curves(rows, names, out / "curves.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _rewrite(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in FIELDS})
    tmp.replace(path)


def curve(rows, name, seed):
    pts = sorted(
        (r["step"], r["fd"], r["probe_acc"]) for r in rows if r["method"] == name and r["seed"] == seed
    )
    return [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]


def summarize(rows: list[dict], names: list[str], final_step: int) -> dict:
    """Target = vanilla's final FD (mean over seeds). Steps to reach it are read off each method's
    seed-mean FD curve (interpolated); vanilla needs its whole run by definition, as in REPA's and
    Self-Flow's plots. Per-seed crossings are kept for the spread."""
    import numpy as np

    seeds = sorted({r["seed"] for r in rows})
    out: dict = {"target_fd": None, "methods": {}}
    curves = {n: [curve(rows, n, s) for s in seeds if curve(rows, n, s)[0]] for n in names}
    # the target comes from vanilla's rows in the CSV even when this invocation ran only ablations
    vanilla = [curve(rows, "vanilla", s) for s in seeds if curve(rows, "vanilla", s)[0]]
    if not vanilla:
        return out
    target = float(np.mean([c[1][-1] for c in vanilla]))
    out["target_fd"] = target
    for n, cs in curves.items():
        if not cs:
            continue
        k = min(len(c[0]) for c in cs)
        steps = cs[0][0][:k]
        mean_fd = np.mean([c[1][:k] for c in cs], axis=0).tolist()
        reach = float(final_step) if n == "vanilla" else steps_to_reach(steps, mean_fd, target)
        out["methods"][n] = {
            "final_fd": mean_std([c[1][-1] for c in cs]),
            "steps_to_vanilla_final_fd": reach,
            "steps_per_seed": [steps_to_reach(c[0], c[1], target) for c in cs],
            "final_probe_acc": mean_std([c[2][-1] for c in cs]),
            "speedup_vs_vanilla": final_step / reach if reach not in (0, float("inf")) else 0.0,
        }
    return out


def write_table(summary: dict, path: Path, cfg: StudyConfig) -> None:
    target = summary["target_fd"]
    lines = [
        (
            "Target: none (no vanilla run in results.csv); "
            if target is None
            else f"Target: vanilla's final domain FD = {target:.3f} (mean over seeds {cfg.seeds}); "
        )
        + f"{cfg.train.steps} steps, model {cfg.model.size}, data {cfg.data.name} {cfg.data.image_size}px.",
        "",
        "| method | final FD (mean ± sd) | steps to vanilla's final FD (seed-mean curve) | vanilla ÷ method | final probe acc (mean ± sd) |",
        "|---|---|---|---|---|",
    ]
    for n, m in summary["methods"].items():
        fd_m, fd_s = m["final_fd"]
        st = m["steps_to_vanilla_final_fd"]
        per_seed = ", ".join("never" if v == float("inf") else f"{v:.0f}" for v in m["steps_per_seed"])
        st_txt = ("never" if st == float("inf") else f"{st:.0f}") + f" (per seed: {per_seed})"
        pa, ps = m["final_probe_acc"]
        lines.append(
            f"| {n} | {fd_m:.3f} ± {fd_s:.3f} | {st_txt} | {m.get('speedup_vs_vanilla', 0):.2f} | {pa:.3f} ± {ps:.3f} |"
        )
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def plot_curves(rows: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    seeds = sorted({r["seed"] for r in rows})
    for n in names:
        curves = [curve(rows, n, s) for s in seeds if curve(rows, n, s)[0]]
        if not curves:
            continue
        k = min(len(c[0]) for c in curves)
        steps = curves[0][0][:k]
        for ax, j in ((axes[0], 1), (axes[1], 2)):
            vals = np.array([c[j][:k] for c in curves])
            line = ax.plot(steps, vals.mean(0), label=n)[0]
            ax.fill_between(steps, vals.min(0), vals.max(0), color=line.get_color(), alpha=0.2)
    axes[0].set(xlabel="step", ylabel="domain FD (lower is better)", yscale="log")
    axes[1].set(xlabel="step", ylabel="linear-probe accuracy")
    axes[0].legend()
    fig.suptitle("EMA weights; line = mean, band = min–max over seeds")
    fig.tight_layout()
    tmp = path.with_name(".curves.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


@hydra.main(config_path=CONFIG_DIR, config_name="convergence", version_base="1.3")
@entry_point
def main(raw: DictConfig) -> None:
    cfg = typed(StudyConfig, raw)
    summary = run_study(cfg)
    print((Path(cfg.out_dir) / "table.md").read_text())
    print(json.dumps(summary["methods"], indent=1, default=str)[:2000])


if __name__ == "__main__":
    sys.exit(main())
