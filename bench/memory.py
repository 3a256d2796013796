"""Benchmark: peak memory of one training step (Self-Flow) for the debug and B sizes, with and without
activation checkpointing. Each configuration runs in its own process (peak RSS on CPU is monotonic);
on CUDA the number is torch.cuda.max_memory_allocated.

python bench/memory.py [--sizes debug B] [--batch 8] [--image 32] [--patch 2]   -> JSON
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch


def one(size: str, checkpointing: bool, batch: int, image: int, patch: int) -> dict:
    from worldflow.model.dit import DiT, ModelConfig
    from worldflow.objectives import build_objective
    from worldflow.train import pick_device

    device = pick_device("auto")
    torch.manual_seed(0)
    model = DiT(ModelConfig(size=size, image_size=image, patch=patch, num_classes=10)).to(device)
    teacher = (
        DiT(ModelConfig(size=size, image_size=image, patch=patch, num_classes=10))
        .to(device)
        .requires_grad_(False)
    )
    obj = build_objective({"name": "selfflow"}, model).to(device)
    opt = torch.optim.AdamW([*model.parameters(), *obj.parameters()], lr=1e-4)
    model.grad_checkpointing = checkpointing
    batch_ = {
        "x": torch.randn(batch, 3, image, image, device=device),
        "y": torch.zeros(batch, dtype=torch.long, device=device),
    }

    def step():
        opt.zero_grad()
        loss, _ = obj(model, teacher, batch_)
        loss.backward()
        opt.step()

    step()  # optimizer state allocated
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {
        "size": size,
        "activation_checkpointing": checkpointing,
        "device": str(device),
        "step_peak_extra_mb": peak / 2**20,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["debug", "B"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image", type=int, default=32)
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--one", nargs=2, metavar=("SIZE", "CKPT"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1] == "1", args.batch, args.image, args.patch)))
        return
    rows = []
    for size in args.sizes:
        for ck in (0, 1):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                size,
                str(ck),
                "--batch",
                str(args.batch),
                "--image",
                str(args.image),
                "--patch",
                str(args.patch),
            ]
            rows.append(
                json.loads(
                    subprocess.run(cmd, capture_output=True, text=True, check=True)
                    .stdout.strip()
                    .splitlines()[-1]
                )
            )
    for size in args.sizes:
        a, b = [r["step_peak_extra_mb"] for r in rows if r["size"] == size]
        rows.append({"size": size, "checkpointing_saves_fraction": 1 - b / a if a else 0.0})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
