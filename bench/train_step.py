"""Benchmark: Self-Flow step time / vanilla step time (goal <= 1.25) and achieved training GFLOP/s over
dense matmul GFLOP/s measured in the same process (goal >= 0.6 on CPU; MFU >= 40% on GPU at size B, bf16).

python bench/train_step.py [--size S] [--batch 16] [--image 32] [--patch 2] [--steps 6] [--device auto] [--compile]
Prints one JSON object. FLOPs are counted by torch.utils.flop_counter on a real eager step (forward + backward);
with --compile the timed steps run the student's and the EMA teacher's forward through
worldflow.train.compile_model, as train.compile=true does.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from worldflow.model.dit import DiT, ModelConfig
from worldflow.objectives import build_objective
from worldflow.train import autocast_dtype, compile_model, ema_update, pick_device, sync


def dense_matmul_flops(device, dtype, n: int = 2048, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def make_step(model, objective, teacher, batch, opt, amp, device):
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss, _ = objective(model, teacher, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if teacher is not None:
            ema_update(teacher, model, 0.999)

    return step


def time_steps(step, device, n: int) -> float:
    step()
    step()
    sync(device)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]  # median: robust to a noisy machine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="S")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--image", type=int, default=32)
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    device = pick_device(args.device)
    amp = autocast_dtype(args.precision, device)
    torch.manual_seed(0)
    model = DiT(ModelConfig(size=args.size, image_size=args.image, patch=args.patch, num_classes=10)).to(
        device
    )
    teacher = DiT(ModelConfig(size=args.size, image_size=args.image, patch=args.patch, num_classes=10)).to(
        device
    )
    teacher.load_state_dict(model.state_dict())
    teacher.requires_grad_(False)
    batch = {
        "x": torch.randn(args.batch, 3, args.image, args.image, device=device),
        "y": torch.randint(0, 10, (args.batch,), device=device),
    }
    result = {
        "device": str(device),
        "size": args.size,
        "batch": args.batch,
        "tokens": model.num_tokens,
        "precision": str(amp or "fp32"),
        "compile": args.compile,
    }
    run_model = compile_model(model) if args.compile else model
    run_teacher = compile_model(teacher) if args.compile else teacher
    for name in ("vanilla", "selfflow"):
        obj = build_objective({"name": name}, model).to(device)
        opt = torch.optim.AdamW([*model.parameters(), *obj.parameters()], lr=1e-4)
        step = make_step(model, obj, teacher if obj.needs_teacher else None, batch, opt, amp, device)
        with FlopCounterMode(display=False) as fc:
            step()
        flops = fc.get_total_flops()
        if args.compile:
            step = make_step(
                run_model, obj, run_teacher if obj.needs_teacher else None, batch, opt, amp, device
            )
        sec = time_steps(step, device, args.steps)
        result[name] = {"step_s": sec, "gflop_per_step": flops / 1e9, "achieved_gflops": flops / sec / 1e9}
    matmul = dense_matmul_flops(device, amp or torch.float32, n=8192 if device.type == "cuda" else 2048)
    result["dense_matmul_gflops"] = matmul / 1e9
    result["selfflow_over_vanilla_step_time"] = result["selfflow"]["step_s"] / result["vanilla"]["step_s"]
    for name in ("vanilla", "selfflow"):
        result[name]["achieved_over_matmul"] = result[name]["achieved_gflops"] * 1e9 / matmul
    if device.type == "cuda":
        peak = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core peak (SXM)
        name = torch.cuda.get_device_name()
        p = next((v for k, v in peak.items() if k in name), None)
        if p:
            for n in ("vanilla", "selfflow"):
                result[n]["mfu"] = result[n]["achieved_gflops"] * 1e9 / p
    result["goals"] = {
        "selfflow_over_vanilla_step_time": "<= 1.25",
        "achieved_over_matmul_cpu": ">= 0.6",
        "gpu_mfu_B_bf16": ">= 0.40",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
