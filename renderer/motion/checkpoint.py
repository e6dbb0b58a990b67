"""Save and load MotionDiT checkpoints, with errors that name the file and what is wrong.

A checkpoint is one ``torch.save`` dict of plain types and tensors (it loads with
``weights_only=True``): ``format``, ``version``, the model ``config``, its
``state_dict`` (weights plus the motion normalisation statistics) and free-form
``meta`` (training command, data, time).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from renderer.motion.model import MotionDiT, MotionDiTConfig

FORMAT = "visage-motion-dit"
VERSION = 1
#: The shipped weights, trained by ``visage motion train``.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "motion_dit.pt"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the model."""


def save_checkpoint(path: Path, model: MotionDiT, meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` (config, weights, normalisation) and ``meta`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "state_dict": state,
        "meta": meta or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: Path | None = None) -> dict[str, Any]:
    """The raw checkpoint dict at ``path`` (default: the shipped weights), validated."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not path.is_file():
        hint = " (train it with `visage motion train`)" if path == DEFAULT_CHECKPOINT else ""
        raise CheckpointError(f"motion checkpoint not found: {path}{hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage makes torch's unpickler raise almost anything
        if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile):
            raise CheckpointError(f"cannot read motion checkpoint {path}: {exc}") from exc
        raise CheckpointError(
            f"motion checkpoint {path} is corrupt or not a torch checkpoint: {exc}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a Visage motion checkpoint (format {FORMAT!r})")
    version = payload.get("version")
    if version != VERSION:
        raise CheckpointError(
            f"motion checkpoint {path} has version {version!r}; this Visage reads version "
            f"{VERSION} (retrain with `visage motion train`)"
        )
    for key, kind in (("config", dict), ("state_dict", dict), ("meta", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"motion checkpoint {path} lacks a valid {key!r} entry")
    return payload


def load_model(path: Path | None = None) -> MotionDiT:
    """The MotionDiT stored at ``path`` (default: the shipped weights), in eval mode."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    payload = read_checkpoint(path)
    try:
        cfg = MotionDiTConfig.from_dict(payload["config"])
        model = MotionDiT(cfg)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"motion checkpoint {path} has a bad config: {exc}") from exc
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise CheckpointError(f"motion checkpoint {path} does not fit the model: {detail}") from exc
    if not torch.all(model.motion_std > 0):
        raise CheckpointError(f"motion checkpoint {path} has non-positive motion_std")
    return model.eval()
