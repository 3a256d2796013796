"""python eval/convergence.py [methods=[vanilla,repa,selfflow]] [ablations=[no_rep,no_dual,teacher_student,attn_sep]]
                           [seeds=[0,1,2]] [workers=2] [train.steps=8000] [out_dir=runs/convergence]
                           [report_only=true]
                           (--config-name convergence_gpu for the GPU size)

The convergence study of DESIGN.md §6: the same model, data, compute and seeds for every method, and a
constant learning rate after warm-up, so a shorter horizon is an exact prefix of a longer one. The EMA weights
are evaluated every `eval.every` steps (domain FD of samples, linear-probe accuracy of a block's features); at
the last step FD is measured again with each sampler of `eval.final_samplers`. Every evaluation leaves a
checkpoint, so the same command run again resumes runs that were cut short and extends finished ones to a
larger `train.steps`. Runs are spread over `workers` processes of one thread each. Writes results.csv,
curves.png, table.md and summary.json to out_dir: for each FD level of `ladder`, the steps and training
seconds each method and seed need to reach it and the ratio vanilla ÷ method; the plateau check.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from worldflow import ckpt
from worldflow.config import CONFIG_DIR, entry_point, typed
from worldflow.data import DataConfig, build_dataset, stack
from worldflow.encoders import save_encoder
from worldflow.errors import ConfigError
from worldflow.generate import generate
from worldflow.logger import read_metrics
from worldflow.metrics.convergence import crossing, mean_std, relative_change
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
SAMPLERS = ("euler", "heun", "sde")


@dataclass
class EvalConfig:
    every: int = 250
    samples: int = 1024
    sample_steps: int = 16  # Euler steps of the evaluation every `every` steps
    final_samplers: dict[str, int] = field(default_factory=lambda: {"sde": 250})  # method -> steps, last step
    real: int = 2048
    probe_train: int = 1024
    probe_test: int = 512
    probe_block: int = 0  # 0: the Self-Flow student block round(0.3·depth)


@dataclass
class PlateauConfig:
    """Vanilla has plateaued when its FD changed by less than `rel_change` over the last `window` steps."""

    window: int = 2000
    rel_change: float = 0.10


@dataclass
class StudyConfig:
    out_dir: str = "runs/convergence"
    methods: list[str] = field(default_factory=lambda: ["vanilla", "repa", "selfflow"])
    ablations: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    workers: int = 1  # processes, one thread each, one (method, seed) run at a time
    report_only: bool = (
        False  # rewrite table.md, summary.json and curves.png from the runs there, train nothing
    )
    ladder: list[float] = field(default_factory=lambda: [400.0, 200.0, 150.0, 120.0, 100.0, 80.0, 60.0])
    plateau: PlateauConfig = field(default_factory=PlateauConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    domain_encoder: DomainEncoderConfig = field(default_factory=DomainEncoderConfig)
    repa_projector_dim: int = 256


FIELDS = ["method", "seed", "step", "sampler", "fd", "probe_acc", "loss", "train_seconds"]


def main_sampler(ev: EvalConfig) -> str:
    return f"euler{ev.sample_steps}"


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
                "probe_acc": float(r["probe_acc"]) if r["probe_acc"] else math.nan,
                "train_seconds": float(r["train_seconds"]),
            }
            for r in csv.DictReader(f)
        ]


def write_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in FIELDS})
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def check(cfg: StudyConfig) -> list[str]:
    names = cfg.methods + cfg.ablations
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method/ablation {unknown}; choose from {list(METHODS)}")
    ev = cfg.eval
    if ev.every <= 0 or cfg.train.steps % ev.every:
        raise ConfigError(f"train.steps={cfg.train.steps} must be a multiple of eval.every={ev.every}")
    bad = [m for m in ev.final_samplers if m not in SAMPLERS]
    if bad:
        raise ConfigError(f"eval.final_samplers: unknown sampler {bad}; use {list(SAMPLERS)}")
    if cfg.train.lr_schedule != "constant":
        raise ConfigError(
            "train.lr_schedule must be constant: shorter horizons must be prefixes of longer ones"
        )
    if cfg.data.num_samples < ev.real + ev.probe_train + ev.probe_test:
        raise ConfigError(
            f"data.num_samples={cfg.data.num_samples} is smaller than eval.real + probe_train + probe_test"
        )
    return names


class Evaluator:
    """Domain FD against `eval.real` images and a linear probe on the next images, built once per process
    (the FD encoder is trained once, by `prepare`, and read from out_dir/cache)."""

    def __init__(self, cfg: StudyConfig):
        ev, out = cfg.eval, Path(cfg.out_dir)
        self.data = build_dataset(cfg.data)
        real_x, real_y = stack(self.data, range(ev.real))
        self.fd = DomainFD(
            real_x, real_y if self.data.num_classes else None, out / "cache", cfg.domain_encoder
        )
        self.probe_x, self.probe_y = stack(
            self.data, range(ev.real, ev.real + ev.probe_train + ev.probe_test)
        )
        self.repa_path = out / "cache" / "repa_encoder.safetensors"


def prepare(cfg: StudyConfig, names: list[str]) -> Evaluator:
    """The cached encoders every run reads: the FD encoder and REPA's "external" one. REPA's is trained like
    the FD encoder but on other images and another seed, so the metric does not share weights with one
    method's target (DINOv2 stands in this way at CPU scale)."""
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    ev = Evaluator(cfg)
    print(f"domain FD encoder: {ev.fd.path}")
    if "repa" in names and not ev.repa_path.exists():
        enc_cfg = dataclasses.replace(cfg.domain_encoder, seed=cfg.domain_encoder.seed + 1000)
        labels = ev.probe_y if ev.data.num_classes else None
        save_encoder(train_domain_encoder(ev.probe_x, labels, enc_cfg), ev.repa_path)
    return ev


def resume_point(run_dir: Path, rows: list[dict], sampler: str) -> tuple[int, list[dict]]:
    """The step a run continues from and the evaluation rows that stay. A checkpoint whose evaluation did not
    finish is removed (the one before it has its row: the loop writes a checkpoint, then evaluates), rows
    after the last checkpoint are dropped; without a checkpoint the run starts again from nothing."""
    evaluated = {r["step"] for r in rows if r["sampler"] == sampler}
    for path in reversed(ckpt.list_checkpoints(run_dir / "checkpoints")):
        step = int(path.name.split("_")[1])
        if step in evaluated:
            return step, [r for r in rows if r["step"] <= step]
        shutil.rmtree(path)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return 0, []


def run_one(cfg: StudyConfig, name: str, seed: int, ev: Evaluator | None = None) -> str:
    """Train (or resume, or extend) one method at one seed to cfg.train.steps, evaluating as it goes."""
    ev = ev or Evaluator(cfg)
    evc, steps = cfg.eval, cfg.train.steps
    run_dir = Path(cfg.out_dir) / "runs" / f"{name}_s{seed}"
    evals = run_dir / "evals.csv"
    label = main_sampler(evc)
    finals = [f"{m}{n}" for m, n in evc.final_samplers.items()]
    rows = read_rows(evals)
    have = {(r["step"], r["sampler"]) for r in rows}
    if all((steps, s) in have for s in [label, *finals]):
        return f"{name} seed {seed}: done at step {steps}"
    start, rows = resume_point(run_dir, rows, label)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_rows(evals, rows)
    torch.manual_seed(seed)
    model_cfg = config_for_data(cfg.model, tuple(ev.data.sample_shape), ev.data.num_classes)
    model = DiT(model_cfg)
    obj_cfg = dict(METHODS[name])
    if obj_cfg["name"] == "repa":
        obj_cfg.update(encoder=str(ev.repa_path), projector_dim=cfg.repa_projector_dim)
    objective = build_objective(obj_cfg, model)
    block = evc.probe_block or default_blocks(model.depth)[0]
    # training seconds exclude evaluation: the clock stops while evaluate() runs
    clock = {"seconds": max((r["train_seconds"] for r in rows), default=0.0), "since": time.perf_counter()}

    def evaluate(ema, step, run_dir):
        clock["seconds"] += time.perf_counter() - clock["since"]
        logged = read_metrics(run_dir / "metrics.jsonl")
        loss = logged[-1].get("loss_flow", "") if logged else ""
        feats = block_features(ema, ev.probe_x, block)
        k = evc.probe_train
        acc = linear_probe(feats[:k], ev.probe_y[:k], feats[k:], ev.probe_y[k:])
        samplers = [("euler", evc.sample_steps)] + (list(evc.final_samplers.items()) if step == steps else [])
        for method, n in samplers:
            samples = generate(ema, evc.samples, steps=n, method=method, seed=seed)
            row = {"method": name, "seed": seed, "step": step, "sampler": f"{method}{n}",
                   "fd": ev.fd(samples.cpu()), "probe_acc": acc, "loss": loss,
                   "train_seconds": clock["seconds"]}  # fmt: skip
            rows.append(row)
            write_rows(evals, rows)
            line = (f"  {name} seed {seed} step {step}: FD {row['fd']:.2f} ({row['sampler']}) probe {acc:.3f} "
                    f"train {clock['seconds']:.0f} s")  # fmt: skip
            print(line, flush=True)
            if sys.stdout is not sys.__stdout__:  # a pool process: its own log, and the terminal
                print(line, file=sys.__stdout__, flush=True)
        clock["since"] = time.perf_counter()

    train_cfg = dataclasses.replace(
        cfg.train, seed=seed, sample_every=evc.every, ckpt_every=evc.every, keep_checkpoints=2
    )
    print(f"{name} seed {seed}: " + (f"resuming at step {start}" if start else "training") + f" to {steps}")
    meta = {"model": dataclasses.asdict(model_cfg), "objective": obj_cfg}
    train(model, objective, ev.data, train_cfg, run_dir, meta, sample_fn=evaluate, resume=start > 0)
    return f"{name} seed {seed}: finished step {steps}"


def _run_in_worker(cfg: StudyConfig, name: str, seed: int) -> str:
    """run_one in a pool process: one thread; the training log (progress bar included) goes to the run's
    train.log, the evaluation lines to the terminal as well."""
    torch.set_num_threads(1)
    log = Path(cfg.out_dir) / "runs" / f"{name}_s{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        return run_one(cfg, name, seed)


def run_study(cfg: StudyConfig) -> dict:
    names = check(cfg)
    if cfg.report_only:
        return report(cfg, names)
    ev = prepare(cfg, names)
    jobs = [(n, s) for n in names for s in cfg.seeds]
    if cfg.workers <= 1:
        for n, s in jobs:
            print(run_one(cfg, n, s, ev))
    else:
        import multiprocessing

        os.environ["OMP_NUM_THREADS"] = "1"
        pool = ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn"))
        print(f"{len(jobs)} runs over {cfg.workers} processes; training logs: {cfg.out_dir}/runs/*.log")
        try:
            for fut in as_completed([pool.submit(_run_in_worker, cfg, n, s) for n, s in jobs]):
                print(fut.result(), flush=True)
        except KeyboardInterrupt:  # as Ctrl-C in the terminal: each run writes a checkpoint and stops
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGINT)
            raise
        finally:
            pool.shutdown(cancel_futures=True)
    return report(cfg, names)


def report(cfg: StudyConfig, names: list[str]) -> dict:
    """results.csv (every run's rows), summary.json, table.md and curves.png from the runs in out_dir."""
    out = Path(cfg.out_dir)
    rows = [r for p in sorted((out / "runs").glob("*/evals.csv")) for r in read_rows(p)]
    write_rows(out / "results.csv", rows)
    shown = names + [n for n in METHODS if n not in names and any(r["method"] == n for r in rows)]
    summary = summarize(rows, shown, cfg)
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out / "summary.json")
    write_table(summary, out / "table.md", cfg)
    plot_curves(rows, shown, main_sampler(cfg.eval), out / "curves.png")
    return summary


def curve(rows: list[dict], name: str, seed: int, sampler: str) -> dict[str, list]:
    pts = sorted(
        (r["step"], r["fd"], r["train_seconds"], r["probe_acc"])
        for r in rows
        if r["method"] == name and r["seed"] == seed and r["sampler"] == sampler
    )
    return {k: [p[i] for p in pts] for i, k in enumerate(("steps", "fd", "seconds", "probe"))}


def ratio(vanilla: float, method: float) -> float:
    """vanilla ÷ method of a cost to reach a level: inf when only the method reaches it, 0 when only vanilla
    does, nan when neither does."""
    if math.isinf(vanilla) and math.isinf(method):
        return math.nan
    if math.isinf(method):
        return 0.0
    return math.inf if math.isinf(vanilla) else vanilla / method


def summarize(rows: list[dict], names: list[str], cfg: StudyConfig) -> dict:
    """Per method: the horizon reached, final FD per sampler and probe accuracy (mean ± sd over seeds), and for
    each FD level (the ladder, then vanilla's final FD) the steps and training seconds per seed to reach it,
    with the ratio vanilla ÷ method per seed (paired by seed). Plateau: each seed's relative FD change over
    the last `plateau.window` steps."""
    label = main_sampler(cfg.eval)
    seeds = sorted({r["seed"] for r in rows})
    curves = {n: {s: c for s in seeds if (c := curve(rows, n, s, label))["steps"]} for n in names}
    vanilla = curves.get("vanilla") or {
        s: c for s in seeds if (c := curve(rows, "vanilla", s, label))["steps"]
    }  # vanilla's rows set the target even when this invocation ran only ablations
    target = float(sum(c["fd"][-1] for c in vanilla.values()) / len(vanilla)) if vanilla else None
    levels = [float(v) for v in cfg.ladder] + ([target] if target is not None else [])

    def reach(cs: dict, level: float) -> tuple[dict, dict]:
        """Per seed: the steps and the training seconds at which FD first reaches `level`."""
        return (
            {s: crossing(c["steps"], c["fd"], level, c["steps"]) for s, c in cs.items()},
            {s: crossing(c["steps"], c["fd"], level, c["seconds"]) for s, c in cs.items()},
        )

    vanilla_reach = {level: reach(vanilla, level) for level in levels}
    out: dict = {"target_fd": target, "levels": levels, "sampler": label, "methods": {}}
    for n, cs in curves.items():
        if not cs:
            continue
        m: dict = {
            "seeds": sorted(cs),
            "steps_reached": min(c["steps"][-1] for c in cs.values()),
            "final_fd": mean_std([c["fd"][-1] for c in cs.values()]),
            "final_probe_acc": mean_std([c["probe"][-1] for c in cs.values()]),
            "final_samplers": {},
            "fd_change": {s: relative_change(c["steps"], c["fd"], cfg.plateau.window) for s, c in cs.items()},
            "ladder": [],
        }
        for f_label in {r["sampler"] for r in rows if r["method"] == n and r["sampler"] != label}:
            finals = [
                r["fd"]
                for r in rows
                if r["method"] == n and r["sampler"] == f_label and r["step"] == cfg.train.steps
            ]
            if finals:
                m["final_samplers"][f_label] = mean_std(finals)
        for level in levels:
            steps, secs = reach(cs, level)
            van_steps, van_secs = vanilla_reach[level]
            paired = [s for s in cs if s in vanilla]
            m["ladder"].append({
                "fd": level,
                "steps": steps,
                "seconds": secs,
                "ratio_steps": {s: ratio(van_steps[s], steps[s]) for s in paired},
                "ratio_seconds": {s: ratio(van_secs[s], secs[s]) for s in paired},
            })  # fmt: skip
        out["methods"][n] = m
    changes = list(out["methods"].get("vanilla", {}).get("fd_change", {}).values())
    out["plateau"] = {
        "window": cfg.plateau.window,
        "vanilla_fd_change": changes,
        "reached": bool(changes) and all(c < cfg.plateau.rel_change for c in changes),
    }
    return out


def _fmt(v: float, digits: int = 0) -> str:
    if math.isnan(v):
        return "—"
    return "never" if math.isinf(v) and v > 0 else f"{v:,.{digits}f}"


def _spread(values: list[float]) -> str:
    """mean ± sd when every seed has a finite value, else the per-seed values."""
    if values and all(math.isfinite(v) for v in values):
        m, s = mean_std(values)
        return f"{m:.2f} ± {s:.2f}" if len(values) > 1 else f"{m:.2f}"
    return "/".join("> horizon" if math.isinf(v) else _fmt(v, 2) for v in values) or "—"


def write_table(summary: dict, path: Path, cfg: StudyConfig) -> None:
    target, plateau = summary["target_fd"], summary["plateau"]
    change = ", ".join("—" if math.isnan(c) else f"{c:.1%}" for c in plateau["vanilla_fd_change"])
    lines = [
        f"Model {cfg.model.size}, data {cfg.data.name} {cfg.data.image_size}px ({cfg.data.num_samples} images), "
        f"batch {cfg.train.batch_size}, lr {cfg.train.lr:g} constant, horizon {cfg.train.steps} steps, FD of "
        f"{cfg.eval.samples} samples ({summary['sampler']}) every {cfg.eval.every} steps. "
        + ("No vanilla run: no target." if target is None else f"Vanilla's final FD: {target:.1f}."),
        "",
        f"Plateau: vanilla's FD changed by {change or 'no vanilla run'} over the last {plateau['window']} steps "
        "(per seed; — : the run is shorter than that); "
        + ("plateau reached." if plateau["reached"] else "**not a plateau yet: conclusions wait.**"),
        "",
        "| "
        + " | ".join(
            ["method", "seeds", "steps", f"final FD ({summary['sampler']})"]
            + [f"final FD {k}" for k in _final_labels(summary)]
            + [f"FD change, last {plateau['window']} steps", "probe acc"]
        )
        + " |",
        "|---|---|---|---|" + "---|" * len(_final_labels(summary)) + "---|---|",
    ]
    for n, m in summary["methods"].items():
        fm, fs = m["final_fd"]
        pm, ps = m["final_probe_acc"]
        finals = [m["final_samplers"].get(k) for k in _final_labels(summary)]
        lines.append(
            f"| {n} | {len(m['seeds'])} | {m['steps_reached']} | {fm:.1f} ± {fs:.1f} | "
            + "".join("— | " if f is None else f"{f[0]:.1f} ± {f[1]:.1f} | " for f in finals)
            + ", ".join("—" if math.isnan(c) else f"{c:.1%}" for c in m["fd_change"].values())
            + f" | {pm:.3f} ± {ps:.3f} |"
        )  # fmt: skip
    heads = [f"{lv:g}" for lv in summary["levels"][: len(cfg.ladder)]] + (
        ["vanilla's final"] if target else []
    )
    for key, unit in (("steps", "steps"), ("seconds", "training seconds")):
        lines += [
            "",
            f"Iso-FD ladder, {unit} to reach each FD (mean over seeds; vanilla ÷ method per seed, mean ± sd):",
            "",
            "| method | " + " | ".join(f"FD {h}" for h in heads) + " |",
            "|---|" + "---|" * len(heads),
        ]
        for n, m in summary["methods"].items():
            cells = []
            for rung in m["ladder"]:
                vals = list(rung[key].values())
                mean = sum(vals) / len(vals) if all(math.isfinite(v) for v in vals) else math.inf
                cells.append(f"{_fmt(mean)} ({_spread(list(rung['ratio_' + key].values()))})")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def _final_labels(summary: dict) -> list[str]:
    return sorted({k for m in summary["methods"].values() for k in m["final_samplers"]})


def plot_curves(rows: list[dict], names: list[str], sampler: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    seeds = sorted({r["seed"] for r in rows})
    for n in names:
        cs = [c for s in seeds if (c := curve(rows, n, s, sampler))["steps"]]
        if not cs:
            continue
        k = min(len(c["steps"]) for c in cs)
        for ax, x_key, y_key in (
            (axes[0], "steps", "fd"),
            (axes[1], "seconds", "fd"),
            (axes[2], "steps", "probe"),
        ):
            x = np.mean([c[x_key][:k] for c in cs], axis=0)
            vals = np.array([c[y_key][:k] for c in cs])
            line = ax.plot(x, vals.mean(0), label=f"{n} ({len(cs)} seeds)")[0]
            ax.fill_between(x, vals.min(0), vals.max(0), color=line.get_color(), alpha=0.2)
    axes[0].set(xlabel="step", ylabel=f"domain FD ({sampler}, lower is better)", yscale="log")
    axes[1].set(xlabel="training seconds (mean over seeds)", ylabel="domain FD", yscale="log")
    axes[2].set(xlabel="step", ylabel="linear-probe accuracy")
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
    print(json.dumps(summary["plateau"]))


if __name__ == "__main__":
    sys.exit(main())
