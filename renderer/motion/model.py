"""MotionDiT: a small diffusion transformer from speech audio to facial motion, one chunk at a time.

The model sees a window of ``history + chunk + lookahead`` motion frames (25 fps). Every
frame of the window is one token carrying that frame's audio (its 4 log-mel frames) and,
for the ``history`` frames, the motion already emitted; the ``chunk`` tokens carry the
noisy motion being generated and the ``lookahead`` tokens carry audio only. The flow
time ``t`` conditions every block through adaLN-Zero (as in DiT), and the model predicts
the rectified-flow velocity ``x1 - x0`` of the chunk (``x0`` noise at ``t = 0``, data at
``t = 1``), in motion units normalised by per-channel training statistics that live in
the model's buffers and so travel with every checkpoint.

The mouth is a function of the speech (the same audio must give the same lip shapes),
while blinks, brows and head motion are free to vary. So the source distribution is
per channel: standard normal for the free channels, and a point at zero for the mouth
channels when ``cfg.deterministic_mouth`` is set, which makes the flow for them a plain
regression onto their expected value given the audio and history. Blinks are rare jumps
that a few-step sampler under-produces from unit noise, so sampling draws the eyelids'
noise at ``cfg.eyelid_temperature`` (1 while training; ``visage motion train`` then
calibrates it on the validation split so the blink rate matches the data's).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from renderer.motion.space import IDX, MOTION_DIM
from renderer.motion.visemes import VISEME_CHANNELS

AUDIO_DIM = 320  # N_MELS * MELS_PER_FRAME: the 4 log-mel frames of one motion frame

# Token roles: a history frame (motion known), history before the stream began (no
# motion), a chunk frame being generated, a lookahead frame (audio only).
ROLE_HISTORY, ROLE_NO_HISTORY, ROLE_CHUNK, ROLE_LOOKAHEAD = 0, 1, 2, 3


@dataclass(frozen=True)
class MotionDiTConfig:
    """Sizes of a MotionDiT; frames are 25 fps motion frames."""

    chunk: int = 8  # frames generated per call
    history: int = 12  # emitted frames the model conditions on
    lookahead: int = 3  # future audio frames it may listen to
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    deterministic_mouth: bool = True  # mouth channels start the flow at 0, not noise
    eyelid_temperature: float = 1.0  # std of the eyelids' source noise when sampling
    motion_dim: int = MOTION_DIM
    audio_dim: int = AUDIO_DIM

    @property
    def window(self) -> int:
        """Tokens per call: history + chunk + lookahead."""
        return self.history + self.chunk + self.lookahead

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MotionDiTConfig:
        """Inverse of ``to_dict``; rejects unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MotionDiT config keys: {', '.join(unknown)}")
        return cls(**data)


#: Named sizes; "small" is the shipped one.
SIZES: dict[str, MotionDiTConfig] = {
    "tiny": MotionDiTConfig(width=64, depth=2, heads=2),
    "small": MotionDiTConfig(width=128, depth=4, heads=4),
    "base": MotionDiTConfig(width=192, depth=6, heads=6),
}


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: per-sample affine of normalised activations."""
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Flow time t in [0, 1] -> a width-sized vector (sinusoids, then an MLP)."""

    freqs: torch.Tensor

    def __init__(self, width: int, freq_dim: int = 128) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))
        half = freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = (t.float() * 1000.0)[:, None] * self.freqs[None]  # (B, F/2)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, F)
        return self.mlp(emb)  # (B, D)


class Attention(nn.Module):
    """Bidirectional multi-head self-attention over the window."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        qkv = self.qkv(x).view(b, s, 3, self.heads, d // self.heads)  # (B, S, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, S, Dh)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, S, Dh)
        return self.proj(y.transpose(1, 2).reshape(b, s, d))  # (B, S, D)


class Block(nn.Module):
    """Transformer block with adaLN-Zero conditioning on the flow time."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width)
        )
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        mod = self.ada(c)[:, None, :].chunk(6, dim=-1)  # 6 x (B, 1, D)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN-modulated projection of the chunk tokens to motion velocity."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c)[:, None, :].chunk(2, dim=-1)  # 2 x (B, 1, D)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, S, M)


class MotionDiT(nn.Module):
    """Audio + motion history -> velocity of the next motion chunk (rectified flow)."""

    motion_mean: torch.Tensor
    motion_std: torch.Tensor
    source_std: torch.Tensor
    roles: torch.Tensor

    def __init__(self, cfg: MotionDiTConfig) -> None:
        super().__init__()
        if cfg.width % cfg.heads:
            raise ValueError(f"width {cfg.width} is not divisible by heads {cfg.heads}")
        self.cfg = cfg
        self.audio_in = nn.Linear(cfg.audio_dim, cfg.width)
        self.motion_in = nn.Linear(cfg.motion_dim, cfg.width)
        self.role = nn.Embedding(4, cfg.width)
        self.pos = nn.Parameter(torch.zeros(1, cfg.window, cfg.width))
        self.t_embed = TimestepEmbedder(cfg.width)
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.final = FinalLayer(cfg.width, cfg.motion_dim)
        # Normalisation of motion (fitted on training data, saved with the weights).
        self.register_buffer("motion_mean", torch.zeros(cfg.motion_dim))
        self.register_buffer("motion_std", torch.ones(cfg.motion_dim))
        self.register_buffer("source_std", self._source_std(cfg), persistent=False)
        roles = [ROLE_HISTORY] * cfg.history + [ROLE_CHUNK] * cfg.chunk
        roles += [ROLE_LOOKAHEAD] * cfg.lookahead
        self.register_buffer("roles", torch.tensor(roles), persistent=False)
        self.initialize_weights()

    @staticmethod
    def _source_std(cfg: MotionDiTConfig) -> torch.Tensor:
        """Per-channel std of the flow's source (t = 0) distribution when sampling."""
        std = torch.ones(cfg.motion_dim)
        if cfg.deterministic_mouth:
            std[[IDX[name] for name in VISEME_CHANNELS]] = 0.0
        std[[IDX["eyeBlinkLeft"], IDX["eyeBlinkRight"]]] = cfg.eyelid_temperature
        return std

    def set_eyelid_temperature(self, value: float) -> None:
        """Draw the eyelids' sampling noise at std ``value`` (saved with the config)."""
        if not value > 0:
            raise ValueError(f"eyelid temperature must be positive, got {value}")
        self.cfg = replace(self.cfg, eyelid_temperature=float(value))
        self.source_std.copy_(self._source_std(self.cfg))

    def initialize_weights(self) -> None:
        """Xavier linears, small embeddings; adaLN modulation and the output layer at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.role.weight, std=0.02)
        for layer in self.t_embed.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)
        # adaLN-Zero: every block starts as the identity, and the model predicts zero.
        for block in self.blocks:
            assert isinstance(block, Block)
            _zero(block.ada)
        _zero(self.final.ada)
        _zero(self.final.linear)

    def context(
        self, audio: torch.Tensor, history: torch.Tensor, history_valid: torch.Tensor
    ) -> torch.Tensor:
        """Token embeddings of everything but the noisy chunk; computed once per chunk.

        audio (B, S, audio_dim) for the whole window; history (B, K, motion_dim)
        normalised; history_valid (B, K) bool, False where the stream had not begun.
        """
        cfg = self.cfg
        valid = history_valid[..., None].to(history.dtype)  # (B, K, 1)
        tokens = self.audio_in(audio) + self.pos  # (B, S, D)
        roles = self.role(self.roles)[None].expand(audio.shape[0], -1, -1)  # (B, S, D)
        hist_role = torch.where(
            history_valid[..., None],
            self.role.weight[ROLE_HISTORY],
            self.role.weight[ROLE_NO_HISTORY],
        )  # (B, K, D)
        k = cfg.history
        hist = self.motion_in(history * valid) + hist_role  # (B, K, D)
        return torch.cat([tokens[:, :k] + hist, tokens[:, k:] + roles[:, k:]], dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """Velocity (B, C, motion_dim) of noisy chunk x (B, C, motion_dim) at times t (B,)."""
        cfg = self.cfg
        k, c = cfg.history, cfg.chunk
        chunk = ctx[:, k : k + c] + self.motion_in(x)  # (B, C, D)
        h = torch.cat([ctx[:, :k], chunk, ctx[:, k + c :]], dim=1)  # (B, S, D)
        cond = self.t_embed(t)  # (B, D)
        for block in self.blocks:
            h = block(h, cond)
        return self.final(h[:, k : k + c], cond)  # (B, C, M)

    def normalize(self, motion: torch.Tensor) -> torch.Tensor:
        """Motion in space units -> model units."""
        return (motion - self.motion_mean) / self.motion_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model units -> motion in space units."""
        return x * self.motion_std + self.motion_mean


def _zero(module: nn.Module) -> None:
    """Zero every parameter of ``module``."""
    for p in module.parameters():
        nn.init.zeros_(p)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
