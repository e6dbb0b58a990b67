"""Render benchmark: time the configured face drawer over varied motion (visage bench render)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from renderer.config import AvatarSettings
from renderer.frames import build_drawer
from renderer.motion.space import BLENDSHAPE_NAMES, MOTION_DIM

WARMUP_FRAMES = 5


def sweep_motion(frames: int) -> np.ndarray:
    """(frames, MOTION_DIM) float32 motion that exercises every channel smoothly."""
    t = np.arange(frames, dtype=np.float64)[:, None]  # (F, 1)
    ch = np.arange(MOTION_DIM, dtype=np.float64)[None, :]  # (1, D)
    wave = np.sin(t * (0.21 + 0.037 * ch) + ch * 1.7)  # (F, D) in [-1, 1]
    nb = len(BLENDSHAPE_NAMES)
    out = np.empty((frames, MOTION_DIM), dtype=np.float32)
    out[:, :nb] = 0.5 + 0.5 * wave[:, :nb]
    out[:, nb:] = 0.25 * wave[:, nb:]  # head angles within +-0.25 rad
    return out


def bench_frames(
    width: int = 512,
    height: int = 512,
    frames: int = 100,
    threads: int = 1,
    device: str = "cpu",
    face: str = "stylised",
    avatars_dir: Path | None = None,
    batch: int = 1,
) -> dict[str, Any]:
    """Time ``frames`` renders of the ``face`` drawer (a portrait name is looked up in
    ``avatars_dir``, default ``avatar.dir``'s), ``batch`` frames per call (as one batch
    of sessions; a drawer without ``render_batch`` draws one at a time); returns size,
    device, threads, batch, per-call mean/p50/p95/max ms, per-frame ms and fps."""
    if frames <= 0:
        raise ValueError(f"frames must be positive, got {frames}")
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        settings = AvatarSettings(width=width, height=height, device=device, face=face)  # type: ignore[arg-type]
        if avatars_dir is not None:
            settings.dir = avatars_dir
        renderer = build_drawer(settings)
        render_batch = getattr(renderer, "render_batch", None)
        if batch > 1 and render_batch is None:
            raise ValueError(
                f"the {face} drawer draws one frame at a time; --batch needs a portrait avatar"
            )
        calls = max(math.ceil(frames / batch), 3)
        motion = sweep_motion((calls + WARMUP_FRAMES) * batch).reshape(-1, batch, MOTION_DIM)

        def draw(rows: np.ndarray) -> None:
            if render_batch is None or batch == 1:
                renderer.render(rows[0])
            else:
                render_batch(rows)
            if renderer.device.type == "cuda":
                torch.cuda.synchronize()

        for rows in motion[:WARMUP_FRAMES]:
            draw(rows)
        times = np.empty(calls, dtype=np.float64)
        for i, rows in enumerate(motion[WARMUP_FRAMES:]):
            t0 = time.perf_counter()
            draw(rows)
            times[i] = (time.perf_counter() - t0) * 1e3
    finally:
        torch.set_num_threads(previous)
    mean = float(times.mean())
    return {
        "face": face,
        "width": width,
        "height": height,
        "frames": calls * batch,
        "threads": threads,
        "device": str(renderer.device),
        "batch": batch,
        "mean_ms": mean,
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
        "max_ms": float(times.max()),
        "frame_ms": mean / batch,
        "fps": 1e3 * batch / mean if mean > 0 else math.inf,
    }


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of ``bench_frames`` results, one row each (times per call, i.e.
    per batch; ``frame ms`` is per frame)."""
    header = f"{'size':>9} {'device':>6} {'thr':>3} {'batch':>5} {'mean ms':>8} {'p50 ms':>7} "
    header += f"{'p95 ms':>7} {'max ms':>7} {'frame ms':>8} {'fps':>8}"
    rows = [header, "-" * len(header)]
    for r in results:
        size = f"{r['width']}x{r['height']}"
        rows.append(
            f"{size:>9} {r['device']:>6} {r['threads']:>3} {r['batch']:>5} {r['mean_ms']:>8.2f} "
            f"{r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f} {r['max_ms']:>7.2f} "
            f"{r['frame_ms']:>8.2f} {r['fps']:>8.1f}"
        )
    return "\n".join(rows)
