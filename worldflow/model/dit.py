"""A DiT/SiT-style transformer with per-token timestep conditioning (DESIGN.md §1, §2).

Written after DiT (facebookresearch/DiT `models.py`) and SiT: adaLN-Zero blocks, fixed sin-cos positions.
What is ours: every token carries its own timestep, so shift/scale/gate are per token; the modulation is
computed once per distinct (sample, timestep) pair and gathered, because Self-Flow has at most two
timesteps per sample and the world model a handful. The model holds no loss, sampling or EMA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from worldflow import flow
from worldflow.errors import ConfigError
from worldflow.model.embed import (
    LabelEmbedder,
    TimestepEmbedder,
    patchify,
    sincos_1d,
    sincos_grid,
    unpatchify,
)
from worldflow.model.sizes import size_spec


@dataclass
class ModelConfig:
    size: str = "debug"  # a row of worldflow.model.sizes.SIZES
    channels: int = 3
    image_size: int = 32
    frames: int = 1  # frames per sample; 1 means images
    patch: int = 4
    tubelet: int = 1  # frames per video token
    num_classes: int = 0  # 0: unconditional
    cond_dim: int = 0  # >0: a per-sample condition vector (e.g. a 512-d instruction embedding)
    action_dim: int = 0  # >0: an action token group of `action_horizon` tokens (the world model, §2)
    action_horizon: int = 0
    mlp_ratio: float = 4.0
    # Fixed tokens (clean context, absent futures) attend only to fixed tokens, so at inference their
    # keys/values are computed once per chunk and reused by every ODE step (DESIGN.md §2). Must be set for
    # training and inference alike: it changes what the model computes.
    isolate_fixed: bool = False
    # >0: that many spatial-softmax keypoints of the first tubelet (the world model's clean context): each
    # a softmax over its patch tokens of a learned score, read out as the expected (row, column) and added
    # to every token's conditioning, so where something is reaches the actions as a coordinate. Needs the
    # action tokens (the world model), whose first tubelet is always clean context.
    keypoints: int = 0
    # What the output layer predicts: v (the velocity, SiT) | x (the clean tokens; worldflow.flow.to_velocity
    # turns them into the velocity). Every caller of the model receives velocities either way.
    prediction: str = "x"
    # >0 (the world model sets it to its context length, worldmodel.residual): the first `residual_from`
    # frames are clean context, and each later frame's clean estimate is the last context frame plus the
    # network's output, so a zero output means "nothing moves" (copy the last frame) and the network learns
    # only the change. Residual video prediction: Yang, Srivastava & Mandt 2022 ("Diffusion Probabilistic
    # Modeling for Video Generation") predict a residual to a deterministic next-frame guess; here the
    # guess is the last frame. Needs prediction=x (the output is a frame, not a velocity).
    residual_from: int = 0

    def validate(self) -> None:
        size_spec(self.size)
        flow.check_prediction(self.prediction)
        if self.image_size % self.patch:
            raise ConfigError(
                f"model.image_size={self.image_size} is not divisible by model.patch={self.patch}"
            )
        if self.frames % self.tubelet:
            raise ConfigError(f"model.frames={self.frames} is not divisible by model.tubelet={self.tubelet}")
        if self.keypoints < 0:
            raise ConfigError(f"model.keypoints={self.keypoints}: must be >= 0")
        if (self.action_dim > 0) != (self.action_horizon > 0):
            raise ConfigError("model.action_dim and model.action_horizon must both be 0 or both be positive")
        if self.keypoints and not self.action_dim:
            raise ConfigError(
                f"model.keypoints={self.keypoints} reads clean context frames: only the world model has them"
            )
        if self.residual_from:
            if self.prediction != "x":
                raise ConfigError(
                    "worldmodel.residual=true adds the last context frame to the predicted clean frames: "
                    f"it needs model.prediction=x, not {self.prediction} (or set worldmodel.residual=false)"
                )
            if self.residual_from % self.tubelet or not 0 < self.residual_from < self.frames:
                raise ConfigError(
                    f"worldmodel.residual=true: the context ({self.residual_from} frames) must be a positive "
                    f"multiple of model.tubelet={self.tubelet} and shorter than the clip ({self.frames} frames)"
                )

    @property
    def sample_shape(self) -> tuple[int, ...]:
        s = (self.channels, self.image_size, self.image_size)
        return s if self.frames == 1 else (self.frames, *s)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Returns (output, this input's (keys, values)); `past` keys/values are attended to as well."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), (k, v)


class Block(nn.Module):
    """adaLN-Zero transformer block; shift/scale/gate come in per token as (B, N, 6D)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden)
        )
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, cond_unique, inverse, attn_mask):
        return self.forward_kv(x, cond_unique, inverse, attn_mask)[0]

    def forward_kv(self, x, cond_unique, inverse, attn_mask, past=None):
        """The block, also returning its attention's (keys, values) of x; `past` as in Attention."""
        b, n, d = x.shape
        mod = self.adaLN(cond_unique)[inverse].view(b, n, 6 * d)  # (B, N, 6D)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        a, kv = self.attn(modulate(self.norm1(x), shift1, scale1), attn_mask, past)
        x = x + gate1 * a
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2)), kv


class DiT(nn.Module):
    """Transformer over token groups: "frames" (patch/tubelet tokens) and optionally "actions".

    forward(tokens, t, ...) takes patchified tokens (see `patchify`) and returns per-token velocities in the
    same layout. `t` is (B,) or (B, N) with N the total token count, groups in `self.groups` order.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        hidden, depth, heads = size_spec(cfg.size)
        self.hidden, self.depth, self.heads = hidden, depth, heads
        grid_t = cfg.frames // cfg.tubelet
        grid_hw = cfg.image_size // cfg.patch
        patch_dim = cfg.tubelet * cfg.patch * cfg.patch * cfg.channels
        self.groups: dict[str, tuple[int, int]] = {"frames": (grid_t * grid_hw * grid_hw, patch_dim)}
        if cfg.action_dim:
            self.groups["actions"] = (cfg.action_horizon, cfg.action_dim)

        self.embed_in = nn.ModuleDict({g: nn.Linear(dim, hidden) for g, (_, dim) in self.groups.items()})
        pos = [torch.from_numpy(sincos_grid(hidden, grid_t, grid_hw, grid_hw)).float()]
        if cfg.action_dim:
            steps = torch.arange(cfg.action_horizon).float().numpy()
            pos.append(torch.from_numpy(sincos_1d(hidden, steps)).float())
            self.action_type = nn.Parameter(torch.zeros(1, 1, hidden))
        self.register_buffer("pos_embed", torch.cat(pos)[None], persistent=False)  # (1, N, D)

        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(cfg.num_classes, hidden) if cfg.num_classes else None
        self.cond_embedder = nn.Linear(cfg.cond_dim, hidden) if cfg.cond_dim else None
        self.keypoints = Keypoints(hidden, cfg.keypoints, grid_hw) if cfg.keypoints else None
        self.blocks = nn.ModuleList(Block(hidden, heads, cfg.mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.adaLN_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.embed_out = nn.ModuleDict({g: nn.Linear(hidden, dim) for g, (_, dim) in self.groups.items()})
        self.grad_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        # DiT's initialisation: xavier linears, N(0, 0.02) embeddings, adaLN-Zero and a zero output layer.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.table.weight, std=0.02)
        if self.cfg.action_dim:
            nn.init.normal_(self.action_type, std=0.02)
        for m in [*(b.adaLN[-1] for b in self.blocks), self.adaLN_out[-1], *self.embed_out.values()]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    # ----- token layout ---------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return sum(n for n, _ in self.groups.values())

    def group_slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for g, (n, _) in self.groups.items():
            out[g] = slice(start, start + n)
            start += n
        return out

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.cfg.patch, self.cfg.tubelet)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        return unpatchify(tokens, self.cfg.sample_shape, self.cfg.patch, self.cfg.tubelet)

    # ----- conditioning ---------------------------------------------------------------------------
    def _unique_conditions(
        self, t: torch.Tensor, y, cond, tokens: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token conditions as (unique rows (U, D), index (B*N,)): one row per distinct (sample, t)."""
        b, n = t.shape
        sample = torch.arange(b, device=t.device).repeat_interleave(n)
        key = (
            sample.double() * 4.0 + t.reshape(-1).double()
        )  # t in [0, 1]: keys of different samples never meet
        keys, inverse = torch.unique(key, return_inverse=True)
        sample_u = torch.div(keys, 4.0, rounding_mode="floor")
        t_u = (keys - sample_u * 4.0).float()
        sample_u = sample_u.long()
        c = self.t_embedder(t_u)
        if self.y_embedder is not None:
            if y is None:
                raise ConfigError("this model is class-conditional (model.num_classes > 0): pass labels y")
            c = c + self.y_embedder(y)[sample_u]
        if self.cond_embedder is not None:
            if cond is None:
                raise ConfigError("this model expects a condition vector (model.cond_dim > 0): pass cond")
            c = c + self.cond_embedder(cond.to(c.dtype))[sample_u]
        if self.keypoints is not None:
            c = c + self.keypoints(self.keypoint_input(tokens["frames"]).to(c.dtype))[sample_u]
        return c, inverse

    def keypoint_input(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, N_frames, patch_dim) patchified frames -> the first tubelet's embedded tokens, which
        `self.keypoints` reads."""
        return self.embed_in["frames"](frames[:, : self.keypoints.tokens])

    def null_label(self, batch: int, device) -> torch.Tensor:
        return torch.full((batch,), self.cfg.num_classes, dtype=torch.long, device=device)

    # ----- forward --------------------------------------------------------------------------------
    def embed(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token groups -> (B, N, D) hidden states with positions, groups in `self.groups` order."""
        parts = []
        for g, (n, dim) in self.groups.items():
            if g not in tokens:
                raise ConfigError(f"missing token group {g!r}; the model expects {list(self.groups)}")
            if tokens[g].shape[1:] != (n, dim):
                raise ConfigError(
                    f"token group {g!r} has shape {tuple(tokens[g].shape[1:])}, expected {(n, dim)}"
                )
            h = self.embed_in[g](tokens[g])
            if g == "actions":
                h = h + self.action_type
            parts.append(h)
        return torch.cat(parts, dim=1) + self.pos_embed.to(parts[0].dtype)

    def isolation_mask(self, fixed: torch.Tensor) -> torch.Tensor:
        """(B, 1, N, N) SDPA mask of `isolate_fixed`: a fixed token may attend only to fixed tokens."""
        return (~fixed[:, :, None] | fixed[:, None, :])[:, None]

    def forward(
        self,
        tokens: dict[str, torch.Tensor],
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        return_blocks: Sequence[int] = (),
        stop_after: int | None = None,
        attn_mask: torch.Tensor | None = None,
        fixed: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor] | None, dict[int, torch.Tensor]]:
        """Returns (velocities per group or None if `stop_after` is set, {block: hidden (B, N, D)}).

        Blocks are 1-indexed (block k's output). `attn_mask` is an SDPA mask broadcastable to
        (B, heads, N, N), True = may attend. `fixed` (B, N) bool marks clean or absent tokens (not being
        denoised); with `isolate_fixed` they attend only to each other.
        """
        x = self.embed(tokens)
        b, n, _ = x.shape
        if t.ndim == 1:
            t = t[:, None].expand(b, n)
        if t.shape != (b, n):
            raise ConfigError(f"timesteps have shape {tuple(t.shape)}, expected ({b},) or ({b}, {n})")
        if self.cfg.isolate_fixed and fixed is not None:
            iso = self.isolation_mask(fixed)
            attn_mask = iso if attn_mask is None else attn_mask & iso
        cond_u, inverse = self._unique_conditions(t, y, cond, tokens)

        hidden: dict[int, torch.Tensor] = {}
        last = self.depth if stop_after is None else stop_after
        for i, block in enumerate(self.blocks[:last], start=1):
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, cond_u, inverse, attn_mask, use_reentrant=False)
            else:
                x = block(x, cond_u, inverse, attn_mask)
            if i in return_blocks:
                hidden[i] = x
        if stop_after is not None:
            return None, hidden

        shift, scale = self.adaLN_out(cond_u)[inverse].view(b, n, -1).chunk(2, dim=-1)
        x = modulate(self.norm_out(x), shift, scale)
        out = {
            g: self.velocity(g, x[:, s], tokens, t[:, s], slice(None)) for g, s in self.group_slices().items()
        }
        return out, hidden

    def velocity(self, g: str, h: torch.Tensor, tokens: dict, t_g: torch.Tensor, pos: slice | torch.Tensor):
        """Output layer of group `g` on its hidden states `h` at its token positions `pos` (within the
        group; `slice(None)`: all of them, no copy), as a velocity:
        under x-prediction plus the residual base on frames, then through flow.to_velocity."""
        pred = self.embed_out[g](h)
        if g == "frames" and self.cfg.residual_from:
            pred = pred + self.residual_base(tokens["frames"])[:, pos]
        return flow.to_velocity(pred, tokens[g][:, pos], t_g, self.cfg.prediction)

    def residual_base(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, N_frames, patch_dim) patchified frames -> what `residual_from` adds to the output: zero on
        context tokens, the last context frame on every future token (each of its tubelet's frames)."""
        cfg = self.cfg
        per_slot = (cfg.image_size // cfg.patch) ** 2
        frame_dim = cfg.patch * cfg.patch * cfg.channels  # a token is (tubelet, patch, patch, channel)
        ctx = cfg.residual_from // cfg.tubelet  # context slots
        last = frames[:, (ctx - 1) * per_slot : ctx * per_slot, (cfg.tubelet - 1) * frame_dim :]
        future = last.repeat(1, cfg.frames // cfg.tubelet - ctx, cfg.tubelet)
        return torch.cat([torch.zeros_like(frames[:, : ctx * per_slot]), future], dim=1)

    # ----- cached inference (isolate_fixed) -------------------------------------------------------
    @torch.no_grad()
    def cache_fixed(
        self, tokens: dict[str, torch.Tensor], t: torch.Tensor, fixed_idx: torch.Tensor, y=None, cond=None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per block, the keys/values of the fixed tokens at positions `fixed_idx` (K,). Exact because with
        `isolate_fixed` fixed tokens attend only to each other, so running them alone changes nothing."""
        if not self.cfg.isolate_fixed:
            raise ConfigError("cached inference needs a model trained with model.isolate_fixed=true")
        x = self.embed(tokens)[:, fixed_idx]
        cond_u, inverse = self._unique_conditions(t[:, fixed_idx], y, cond, tokens)
        cache = []
        for block in self.blocks:
            x, kv = block.forward_kv(x, cond_u, inverse, None)
            cache.append(kv)
        return cache

    @torch.no_grad()
    def forward_cached(
        self,
        tokens: dict[str, torch.Tensor],
        t: torch.Tensor,
        idx: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        y=None,
        cond=None,
    ) -> dict[str, torch.Tensor]:
        """Velocities of the tokens at positions `idx` (M,) only (sorted; the noised ones), attending to
        each other and to the cached fixed tokens. Returns {group: (B, M_g, dim)} in position order."""
        x = self.embed(tokens)[:, idx]
        b, m, _ = x.shape
        cond_u, inverse = self._unique_conditions(t[:, idx], y, cond, tokens)
        for block, past in zip(self.blocks, cache, strict=True):
            x, _ = block.forward_kv(x, cond_u, inverse, None, past)
        shift, scale = self.adaLN_out(cond_u)[inverse].view(b, m, -1).chunk(2, dim=-1)
        x = modulate(self.norm_out(x), shift, scale)
        out = {}
        for g, s in self.group_slices().items():
            inside = (idx >= s.start) & (idx < s.stop)
            if inside.any():
                out[g] = self.velocity(g, x[:, inside], tokens, t[:, idx[inside]], idx[inside] - s.start)
        return out


class Keypoints(nn.Module):
    """Spatial-softmax keypoints (Levine et al. 2016, "End-to-End Training of Deep Visuomotor Policies";
    robomimic and Diffusion Policy read their image features the same way): per keypoint a score on each
    patch token (a small MLP of its embedding), a softmax over the grid, the expected (row, column) in
    [-1, 1], then a linear map of all coordinates to one D-vector. A transformer can read a position only
    through its position embedding; this hands it as a number, which an object's side needs when its
    surroundings look alike."""

    def __init__(self, hidden: int, keypoints: int, grid: int):
        super().__init__()
        self.tokens = grid * grid
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, keypoints))
        self.out = nn.Linear(2 * keypoints, hidden)
        # no learned temperature (robomimic's SpatialSoftmax has one): the score MLP already sets the
        # sharpness, and a second scale made the apple policy much worse (docs/results.md, keypoints)
        axis = torch.linspace(-1.0, 1.0, grid)
        rows, cols = torch.meshgrid(axis, axis, indexing="ij")
        self.register_buffer("coords", torch.stack([rows, cols], -1).reshape(-1, 2), persistent=False)

    def coordinates(self, h: torch.Tensor) -> torch.Tensor:  # (B, tokens, D) -> (B, K, 2) rows, columns
        weights = self.score(h).softmax(dim=1)  # (B, tokens, K)
        return torch.einsum("bnk,nc->bkc", weights, self.coords.to(h.dtype))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, tokens, D) -> (B, D)
        return self.out(self.coordinates(h).flatten(1))


def config_for_data(cfg: ModelConfig, sample_shape: tuple[int, ...], num_classes: int) -> ModelConfig:
    """The model's input spec filled in from a dataset: channels, size, frames (images use tubelet 1)."""
    frames = sample_shape[0] if len(sample_shape) == 4 else 1
    return replace(
        cfg,
        channels=sample_shape[-3],
        image_size=sample_shape[-1],
        frames=frames,
        tubelet=cfg.tubelet if frames > 1 else 1,
        num_classes=num_classes,
    )
