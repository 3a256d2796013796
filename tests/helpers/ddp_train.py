"""Run by tests/test_dist.py under torchrun (or plainly): a short run on 16 px blobs.

args: run_dir objective [resume] [long] [fsdp] [accum]

Under torchrun with DDP it writes each rank's parameter checksum to run_dir/params_rank{r}.txt."""

import os
import sys
from pathlib import Path

import torch

from tests.test_train import Blobs
from worldflow.model.dit import DiT, ModelConfig
from worldflow.objectives import build_objective
from worldflow.train import TrainConfig, train

if __name__ == "__main__":
    run_dir, objective = sys.argv[1], sys.argv[2]
    resume = "resume" in sys.argv[3:]
    steps = 40 if "long" not in sys.argv[3:] else 60
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = DiT(ModelConfig(size="debug", image_size=16, patch=4, num_classes=4))
    obj = build_objective({"name": objective}, model)
    cfg = TrainConfig(
        steps=steps,
        batch_size=16,
        grad_accum=2 if "accum" in sys.argv[3:] else 1,
        lr=1e-3,
        ema_decay=0.9,
        log_every=1,
        ckpt_every=20 if steps == 40 else 7,
        parallel="fsdp" if "fsdp" in sys.argv[3:] else "ddp",
    )
    train(model, obj, Blobs(), cfg, run_dir, {"model": {}}, resume=resume)
    if "RANK" in os.environ and "fsdp" not in sys.argv[3:]:
        total = sum(float(p.double().sum()) for p in model.parameters())
        Path(run_dir, f"params_rank{os.environ['RANK']}.txt").write_text(repr(total))
