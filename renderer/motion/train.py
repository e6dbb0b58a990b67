"""Train MotionDiT on the synthetic motion dataset (``visage motion train``).

Every utterance becomes one padded stretch of a flat array: ``history`` frames of
"no stream yet" before it and ``chunk + lookahead`` frames of silence after it (the
audio a live stream sees after an utterance ends). A training example is a window
``[s - history, s + chunk + lookahead)`` with ``s`` drawn uniformly from the utterance's
chunk starts, and a share of each batch drawn from the first two chunks of utterances
(history partly missing), where a fresh stream starts and speech often begins.
The loss is the rectified-flow velocity MSE at a uniform random time, weighted up on
the jaw (the lip-sync channel) and on the mouth during silence (a mouth that moves in a
pause reads as wrong more than a slightly small syllable). Weights are kept as an
exponential moving average, and the EMA weights are saved. Everything random comes
from ``seed``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from renderer.motion.checkpoint import load_model, save_checkpoint
from renderer.motion.data.dataset import Utterance
from renderer.motion.features import MELS_PER_FRAME, N_MELS, log_mel
from renderer.motion.model import SIZES, MotionDiT, MotionDiTConfig, count_params
from renderer.motion.space import IDX, MOTION_DIM
from renderer.motion.visemes import VISEME_CHANNELS

STD_FLOOR = 1e-2  # keeps near-constant channels from blowing up in model units
# Eyelids are scaled by about the size of a blink rather than by their std (~0.17): in std
# units a blink is a rare 5-sigma jump, which a few-step flow smooths away into no blink.
BLINK_SCALE = 0.8
MOUTH = [IDX[name] for name in VISEME_CHANNELS]


@dataclass
class TrainConfig:
    """Training hyper-parameters; ``steps`` wins over ``epochs`` when both are given."""

    size: str = "small"
    steps: int = 12000
    epochs: float | None = None
    batch: int = 128
    lr: float = 6e-4
    min_lr: float = 3e-5
    warmup: int = 300
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.999
    jaw_weight: float = 3.0  # the lip-sync channel matters most
    quiet_mouth_weight: float = 12.0  # mouth channels on silent frames (pauses stay closed)
    seed: int = 0
    device: str = "cpu"
    val_every: int = 500
    early_share: float = 0.2  # of each batch from utterances' first two chunks
    calibrate_utts: int = 100  # validation utterances for the eyelid temperature (0: skip)
    calibrate_steps: int = 4  # sampler steps the calibration is for (the live default)
    threads: int | None = None
    # Fine-tune from these weights (their size and motion normalisation are kept).
    init: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # MotionDiTConfig fields


def silence_features() -> np.ndarray:
    """(N_MELS * MELS_PER_FRAME,) features of one frame of digital silence."""
    return log_mel(np.zeros(MELS_PER_FRAME * 160 + 240, dtype=np.float32))[:MELS_PER_FRAME].reshape(
        -1
    )


def motion_stats(utts: Sequence[Utterance]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and scale of the motion targets: the std (floored), and at least
    BLINK_SCALE for the eyelids."""
    motion = np.concatenate([u.motion for u in utts]).astype(np.float64)
    std = np.maximum(motion.std(0), STD_FLOOR)
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        std[IDX[name]] = max(std[IDX[name]], BLINK_SCALE)
    return motion.mean(0).astype(np.float32), std.astype(np.float32)


class WindowSet:
    """All training windows of a split, gathered into batches by index arithmetic."""

    def __init__(
        self, utts: Sequence[Utterance], cfg: MotionDiTConfig, mean: np.ndarray, std: np.ndarray
    ) -> None:
        k, c, la = cfg.history, cfg.chunk, cfg.lookahead
        silence = silence_features()
        feats, motion, valid, quiet, starts, early = [], [], [], [], [], []
        offset = n_windows = 0
        for u in utts:
            t = u.n_frames
            if t < c:
                continue
            audio = u.mel.reshape(t, N_MELS * MELS_PER_FRAME)  # (T, 320)
            feats += [np.tile(silence, (k, 1)), audio, np.tile(silence, (c + la, 1))]
            norm = (u.motion - mean) / std  # (T, M)
            motion += [np.zeros((k, MOTION_DIM)), norm, np.zeros((c + la, MOTION_DIM))]
            valid += [np.zeros(k, bool), np.ones(t, bool), np.zeros(c + la, bool)]
            quiet += [np.zeros(k, bool), ~u.speech_mask, np.zeros(c + la, bool)]
            early.append(n_windows + np.arange(min(k + c, t - c + 1)))
            starts.append(offset + k + np.arange(t - c + 1))
            n_windows += t - c + 1
            offset += k + t + c + la
        if not starts:
            raise ValueError(f"no utterance is at least {c} frames long")
        self.cfg = cfg
        self.feats = torch.from_numpy(np.concatenate(feats).astype(np.float32))  # (N, 320)
        self.motion = torch.from_numpy(np.concatenate(motion).astype(np.float32))  # (N, M)
        self.valid = torch.from_numpy(np.concatenate(valid))  # (N,)
        self.quiet = torch.from_numpy(np.concatenate(quiet))  # (N,) target frame is silence
        self.starts = torch.from_numpy(np.concatenate(starts))  # (W,)
        self.early = torch.from_numpy(np.concatenate(early))  # (E,) indices into starts
        self.offsets = torch.arange(-k, c + la)  # (S,)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        """audio (B,S,320), history (B,K,M), history_valid (B,K), target (B,C,M), quiet (B,C)."""
        k, c = self.cfg.history, self.cfg.chunk
        idx = self.starts[index][:, None] + self.offsets[None]  # (B, S)
        audio = self.feats[idx]  # (B, S, 320)
        history = self.motion[idx[:, :k]]  # (B, K, M)
        valid = self.valid[idx[:, :k]]  # (B, K)
        target = self.motion[idx[:, k : k + c]]  # (B, C, M)
        quiet = self.quiet[idx[:, k : k + c]]  # (B, C)
        return tuple(x.to(device) for x in (audio, history, valid, target, quiet))


def train_source_std(model: MotionDiT) -> torch.Tensor:
    """The flow's source std while training: the sampling one at eyelid temperature 1."""
    std = model.source_std.clone()
    std[[IDX["eyeBlinkLeft"], IDX["eyeBlinkRight"]]] = 1.0
    return std


def calibrate_eyelids(
    model: MotionDiT,
    utts: Sequence[Utterance],
    *,
    steps: int = 4,
    seed: int = 0,
    iters: int = 6,
    log: Callable[[str], None] = print,
) -> float:
    """Set the eyelid temperature whose streamed blink rate on ``utts`` (validation
    audio) matches their targets' rate, by bisection in [1, 2]; returns it."""
    from renderer.motion.evaluate import learned_tracks
    from renderer.motion.metrics import blinks_per_min

    want = blinks_per_min([u.motion for u in utts])
    lo, hi = 1.0, 2.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        model.set_eyelid_temperature(mid)
        rate = blinks_per_min(learned_tracks(model, utts, steps=steps, seed=seed))
        log(f"eyelid temperature {mid:.3f}: {rate:.1f} blinks/min (data: {want:.1f})")
        lo, hi = (mid, hi) if rate < want else (lo, mid)
    model.set_eyelid_temperature(0.5 * (lo + hi))
    return model.cfg.eyelid_temperature


def calibration_meta(
    model: MotionDiT,
    utts: Sequence[Utterance],
    *,
    steps: int,
    seed: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Calibrate the eyelid temperature (see ``calibrate_eyelids``) and describe it."""
    start = time.perf_counter()
    value = calibrate_eyelids(model, utts, steps=steps, seed=seed, log=log)
    log(f"eyelid temperature {value:.3f} (calibrated in {time.perf_counter() - start:.0f} s)")
    return {
        "eyelid_temperature": value,
        "utterances": len(utts),
        "split": "val",
        "steps": steps,
        "seconds": round(time.perf_counter() - start, 1),
    }


def flow_loss(
    model: MotionDiT,
    batch: tuple[torch.Tensor, ...],
    weights: torch.Tensor,
    generator: torch.Generator,
    quiet_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted MSE between predicted and true rectified-flow velocity at random times.

    ``weights`` (M,) apply everywhere; ``quiet_weights`` (M,) instead on silent frames.
    """
    audio, history, valid, x1, quiet = batch
    b = x1.shape[0]
    t = torch.rand(b, generator=generator).to(x1.device)  # (B,)
    x0 = torch.randn(x1.shape, generator=generator).to(x1.device) * train_source_std(model)
    xt = x0 + t[:, None, None] * (x1 - x0)
    v = model(xt, t, model.context(audio, history, valid))  # (B, C, M)
    w = weights if quiet_weights is None else torch.where(quiet[..., None], quiet_weights, weights)
    return ((v - (x1 - x0)) ** 2 * w).mean()


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(total - cfg.warmup, 1)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)


@torch.no_grad()
def evaluate_loss(
    model: MotionDiT,
    data: WindowSet,
    weights: torch.Tensor,
    device: torch.device,
    quiet_weights: torch.Tensor | None = None,
    n: int = 2048,
) -> float:
    """Flow loss on a fixed (seeded) sample of windows."""
    model.eval()
    g = torch.Generator().manual_seed(1234)
    index = torch.randint(len(data), (min(n, len(data)),), generator=g)
    losses = []
    for part in index.split(512):
        batch = data.batch(part, device)
        losses.append(float(flow_loss(model, batch, weights, g, quiet_weights)))
    return float(np.mean(losses))


def train(
    train_utts: Sequence[Utterance],
    val_utts: Sequence[Utterance],
    out: Path,
    cfg: TrainConfig,
    *,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a MotionDiT, save the EMA weights to ``out``; returns the run's summary."""
    from tqdm import tqdm

    if cfg.size not in SIZES:
        raise ValueError(f"unknown model size {cfg.size!r}; choose one of {', '.join(SIZES)}")
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    if cfg.init:
        # A fine-tune keeps its start's normalisation: the weights were learned in it.
        model = load_model(Path(cfg.init)).train()
        model_cfg = model.cfg
        mean, std = model.motion_mean.numpy().copy(), model.motion_std.numpy().copy()
    else:
        model_cfg = MotionDiTConfig(**{**asdict(SIZES[cfg.size]), **cfg.overrides})
        mean, std = motion_stats(train_utts)
        model = MotionDiT(model_cfg)
        model.motion_mean.copy_(torch.from_numpy(mean))
        model.motion_std.copy_(torch.from_numpy(std))
    data = WindowSet(train_utts, model_cfg, mean, std)
    val = WindowSet(val_utts, model_cfg, mean, std) if val_utts else None
    model.to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    weights = torch.ones(MOTION_DIM, device=device)
    weights[IDX["jawOpen"]] = cfg.jaw_weight
    quiet_weights = weights.clone()
    quiet_weights[MOUTH] *= cfg.quiet_mouth_weight
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or name in ("pos", "role.weight") else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )
    per_epoch = max(len(data) // cfg.batch, 1)
    total = cfg.steps if cfg.epochs is None else max(int(cfg.epochs * per_epoch), 1)
    log(
        f"MotionDiT {cfg.size}{' from ' + cfg.init if cfg.init else ''}: "
        f"{count_params(model):,} params; {len(data):,} windows "
        f"({len(train_utts)} utterances); {total} steps of {cfg.batch} "
        f"({total / per_epoch:.2f} epochs) on {device}"
    )
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    smoothed = None
    bar = tqdm(range(total), desc="motion train", unit="step", disable=not progress)
    for step in bar:
        model.train()
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, total, cfg)
        n_early = int(cfg.batch * cfg.early_share)
        index = torch.cat(
            [
                torch.randint(len(data), (cfg.batch - n_early,), generator=gen),
                data.early[torch.randint(len(data.early), (n_early,), generator=gen)],
            ]
        )
        loss = flow_loss(model, data.batch(index, device), weights, gen, quiet_weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        _ema_update(ema, model, cfg.ema if step >= cfg.warmup else 0.0)
        value = float(loss.detach())
        smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
        bar.set_postfix(loss=f"{smoothed:.4f}", refresh=False)
        last = step + 1 == total
        if val is not None and ((step + 1) % cfg.val_every == 0 or last):
            val_loss = evaluate_loss(ema, val, weights, device, quiet_weights)
            history.append({"step": step + 1, "train_loss": smoothed, "val_loss": val_loss})
            minutes = (time.perf_counter() - start) / 60.0
            log(
                f"step {step + 1}: train {smoothed:.4f}  val(ema) {val_loss:.4f}  {minutes:.1f} min"
            )
    bar.close()
    seconds = time.perf_counter() - start
    final = ema.cpu()
    calibration = None
    if val_utts and cfg.calibrate_utts:
        calibration = calibration_meta(
            final, val_utts[: cfg.calibrate_utts], steps=cfg.calibrate_steps, seed=cfg.seed, log=log
        )
    summary = {
        "size": cfg.size,
        "params": count_params(model),
        "steps": total,
        "batch": cfg.batch,
        "seed": cfg.seed,
        "device": str(device),
        "train_seconds": round(seconds, 1),
        "train_windows": len(data),
        "final_train_loss": smoothed,
        "history": history,
        "calibration": calibration,
        "train_config": {k: v for k, v in asdict(cfg).items() if k != "overrides"},
        **(meta or {}),
    }
    save_checkpoint(out, final, summary)
    log(f"saved {out} after {seconds / 60:.1f} min")
    return summary
