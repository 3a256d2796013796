"""The world-model policy (DESIGN.md §2, §4): policy mode of a fine-tuned checkpoint.

Keeps the frames of the last `(context - 1) * frame_gap + 1` env steps (the harness shows it every
observation, through `act` or `observe`) and gives the model every `frame_gap`-th of them as the context,
spaced as the training windows' context frames are; samples only the action tokens with few Euler steps (future frames stay
absent, never decoded), de-standardises with the checkpoint's statistics, turns the absolute gripper into
the env's relative command and returns the first `stride` actions of the chunk (receding horizon).
With `plan.samples > 1` it samples several chunks, imagines each one's future with forward dynamics and
keeps the best by a configurable score. `noise="episode"` starts every chunk of an episode from the same
Gaussian sample, so the chunk is a fixed function of what the policy sees (no switching between the modes
of the action distribution from one chunk to the next); "chunk" draws a fresh sample each time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from policies.base import ActionChunk
from policies.conversions import absolute_to_relative_rt1
from worldflow.data.actions import ACTION_DIM
from worldflow.data.images import crop_window
from worldflow.errors import ConfigError, DataError
from worldflow.worldmodel.bundle import WorldModel, from_checkpoint
from worldflow.worldmodel.infer import predict
from worldflow.worldmodel.robot import PROPRIO_FROM_ENV


@dataclass
class PlanConfig:
    samples: int = 1  # 1: no planning
    score: str = "consistency"  # consistency: inverse dynamics of the imagined frames agrees with the chunk
    #                              | medoid: the chunk closest to the others (consensus)


def embed_instruction(text: str) -> np.ndarray:
    from worldflow.language import language_embedding

    return language_embedding(text)


def to_model_frame(image: np.ndarray, size: int, crop: list[float] | None = None) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) in [-1, 1]: the checkpoint's crop, then area resampling, like the
    episode cache's conversion."""
    rows, cols = crop_window(image.shape[0], image.shape[1], crop)
    frame = np.array(image[rows, cols])  # a copy: the env's frames may be read-only views
    x = torch.from_numpy(frame).permute(2, 0, 1).float()[None]
    x = F.interpolate(x, size=(size, size), mode="area")
    return x[0].round().clamp(0, 255) / 127.5 - 1.0


def cut_at_terminate(normed: np.ndarray, streak: int, after: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The terminate channel (the last column, after the robot's action; +1 ends the (sub)task): a chunk with a positive step is cut after
    it, so the policy decides again there; the flag is sent only when `after` consecutive chunks predicted
    it (one sampled step past zero is not enough to end an episode). -> (chunk, flags, new streak)."""
    flags = np.zeros(len(normed), bool)
    hits = np.flatnonzero(normed[:, -1] > 0)
    if not len(hits):
        return normed, flags, 0
    streak += 1
    normed, flags = normed[: hits[0] + 1], flags[: hits[0] + 1]
    flags[-1] = streak >= after
    return normed, flags, (0 if flags[-1] else streak)


NOISE_MODES = ("chunk", "episode")  # the initial noise of each chunk: drawn afresh, or the episode's one


class WorldModelPolicy:
    action_dim = ACTION_DIM

    def __init__(
        self,
        checkpoint: str | WorldModel,
        steps: int = 10,
        stride: int = 4,
        plan: PlanConfig | None = None,
        device: str = "cpu",
        terminate_after: int = 1,
        noise: str = "chunk",
    ):
        self.wm = (
            from_checkpoint(checkpoint, device=device)
            if not isinstance(checkpoint, WorldModel)
            else checkpoint
        )
        self.model = self.wm.model
        self.steps, self.plan = steps, plan or PlanConfig()
        self.context, self.frame_gap = self.wm.worldmodel.context, self.wm.worldmodel.frame_gap
        if not 1 <= stride <= self.wm.worldmodel.action_horizon:
            raise ConfigError(
                f"policy stride={stride} must be in 1..{self.wm.worldmodel.action_horizon} (the action horizon)"
            )
        if self.plan.score not in ("consistency", "medoid"):
            raise ConfigError(f"plan.score={self.plan.score!r}; use consistency or medoid")
        if terminate_after < 1:
            raise ConfigError(f"policy terminate_after={terminate_after} must be >= 1")
        if noise not in NOISE_MODES:
            raise ConfigError(f"policy noise={noise!r}; use one of {list(NOISE_MODES)}")
        self.stride, self.terminate_after, self.noise = stride, terminate_after, noise
        self.device = device
        self.crop = self.wm.robot.data.crop  # as the cache cropped the training frames
        convention = self.wm.robot.proprio_from_env
        if convention not in PROPRIO_FROM_ENV:
            raise ConfigError(
                f"robot.proprio_from_env={convention!r} in the checkpoint; use one of {sorted(PROPRIO_FROM_ENV)}"
            )
        self.proprio_from_env = PROPRIO_FROM_ENV[convention]

    def reset(self, instruction: str, seed: int) -> None:
        self.history: list[torch.Tensor] = []
        self.instruction = torch.from_numpy(embed_instruction(instruction)).float()[None].to(self.device)
        self.gripper_open = 1.0  # the env starts with the gripper open
        self.seed = seed
        self.calls = 0
        self.streak = 0  # consecutive chunks that predicted a terminate

    def observe(self, obs: dict) -> None:
        """An observation between two calls of `act` (the chunk's later steps): its frame joins the history."""
        frame = to_model_frame(obs["image"], self.wm.image_size, self.crop).to(self.device)
        span = (self.context - 1) * self.frame_gap + 1
        # before the episode's first frame the context repeats it, as the training windows do
        self.history = (self.history + [frame])[-span:] if self.history else [frame] * span

    @torch.no_grad()
    def act(self, obs: dict) -> ActionChunk:
        self.observe(obs)
        ctx = torch.stack(self.history[:: self.frame_gap])[None]  # (1, context, 3, S, S), the last is now
        cond = self.condition(obs)
        n = self.plan.samples
        seed = self.seed * 100_003 + (self.calls if self.noise == "chunk" else 0)
        self.calls += 1
        chunks = predict(
            self.model,
            ctx.expand(n, *ctx.shape[1:]),
            cond.expand(n, -1),
            "policy",
            steps=self.steps,
            seed=seed,
        )["actions"]
        best = self.choose(ctx, cond, chunks, seed) if n > 1 else 0
        normed = chunks[best].cpu().numpy()[: self.stride]
        terminate = np.zeros(len(normed), bool)
        if self.wm.worldmodel.terminate:
            normed, terminate, self.streak = cut_at_terminate(normed, self.streak, self.terminate_after)
        actions = self.wm.stats.denormalize(normed[:, : len(self.wm.stats.q01)])
        absolute = actions[:, 6].copy()
        actions[:, 6] = absolute_to_relative_rt1(absolute, self.gripper_open)
        self.gripper_open = float(absolute[-1] > 0.5)
        return ActionChunk(actions, terminate)

    def condition(self, obs: dict) -> torch.Tensor:
        """(1, cond_dim): the instruction embedding, then the standardised proprioception if trained with it."""
        if not self.wm.worldmodel.proprio:
            return self.instruction
        sent = np.asarray(obs.get("proprio", np.zeros(0)), np.float32).reshape(-1)
        try:  # the env's convention -> the dataset's fields, as the writer stored them
            proprio = self.proprio_from_env(sent)
        except DataError:
            proprio = sent
        stats = self.wm.proprio_stats
        if stats is None or proprio.shape != (len(stats.q01),):
            want = len(stats.q01) if stats else "?"
            raise ConfigError(
                f"this checkpoint conditions on proprioception ({want} numbers, worldmodel.proprio=true) but "
                f"the env sent {sent.shape[0]}"
            )
        p = torch.from_numpy(stats.normalize(proprio)).float()[None].to(self.device)
        return torch.cat([self.instruction, p], dim=1)

    def choose(self, ctx: torch.Tensor, cond: torch.Tensor, chunks: torch.Tensor, seed: int) -> int:
        n = len(chunks)
        if self.plan.score == "medoid":
            d = torch.cdist(chunks.flatten(1), chunks.flatten(1))
            return int(d.sum(1).argmin())
        cond = cond.expand(n, -1)
        c = ctx.expand(n, *ctx.shape[1:])
        future = predict(self.model, c, cond, "forward", actions=chunks, steps=self.steps, seed=seed)[
            "frames"
        ]
        relabel = predict(self.model, c, cond, "inverse", future_frames=future, steps=self.steps, seed=seed)[
            "actions"
        ]
        return int((relabel - chunks).pow(2).flatten(1).mean(1).argmin())
