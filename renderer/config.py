"""Settings of the avatar renderer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Most sampler steps the few-step flow sampler takes per motion chunk.
MAX_MOTION_STEPS = 8


def default_avatars_dir() -> Path:
    """``$XDG_DATA_HOME/visage/avatars`` (by default ``~/.local/share/visage/avatars``)."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "visage" / "avatars"


class AvatarSettings(BaseModel):
    """How the avatar is drawn and paced."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    width: int = Field(512, ge=64, le=2048, description="Video width in pixels.")
    height: int = Field(512, ge=64, le=2048, description="Video height in pixels.")
    fps: int = Field(25, ge=5, le=60, description="Video frame rate.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Torch device for drawing frames and sampling motion; auto picks CUDA "
        "when present.",
    )
    face: str = Field(
        "stylised",
        min_length=1,
        description="Face drawer: 'stylised' (the procedural torch face), the name of a "
        "portrait avatar in avatar.dir (a photo, animated), or the import path "
        "'package.module:factory' of a callable (settings, width, height) -> FrameDrawer.",
    )
    torch_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="CPU threads torch may use for drawing and motion (CPU device only; set "
        "once per process at server start).",
    )
    motion: Literal["learned", "procedural"] = Field(
        "learned",
        description=(
            "Motion source: 'learned' (MotionDiT, audio-driven, streamed ahead of playback) "
            "or 'procedural' (visemes from TTS phonemes plus scripted idle motion)."
        ),
    )
    motion_checkpoint: Path | None = Field(
        None,
        description="MotionDiT checkpoint for motion='learned'; None uses the shipped weights.",
    )
    motion_steps: int = Field(
        4,
        ge=1,
        le=MAX_MOTION_STEPS,
        description=f"Sampler steps per motion chunk for motion='learned' (1-{MAX_MOTION_STEPS}).",
    )
    seed: int = Field(0, description="Seed of the idle motion (blinks, head sway).")
    degrade: bool = Field(
        True,
        description=(
            "Step quality down when frames fall behind (fewer motion sampler steps, then "
            "half the image rate, then half resolution) and back up when there is headroom."
        ),
    )
    frame_budget_ratio: float = Field(
        0.85,
        gt=0.5,
        le=1.0,
        description=(
            "Share of the frame period a frame's motion + drawing may take on average "
            "before quality steps down (with degrade)."
        ),
    )

    dir: Path = Field(
        default_factory=default_avatars_dir,
        description="Folder of portrait avatars made by `visage avatar create` (one "
        "subfolder each); default $XDG_DATA_HOME/visage/avatars (~/.local/share/...).",
    )

    @field_validator("dir")
    @classmethod
    def _expand_user(cls, path: Path) -> Path:
        return path.expanduser()

    @field_validator("motion_checkpoint")
    @classmethod
    def _checkpoint_exists(cls, path: Path | None) -> Path | None:
        # Fail when the settings load, not at the first call's first frame.
        if path is not None and not path.is_file():
            raise ValueError(f"no motion checkpoint at {path}")
        return path
