"""Settings of the avatar renderer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class AvatarSettings(BaseModel):
    """How the avatar is drawn and paced."""

    width: int = Field(512, ge=64, le=2048, description="Video width in pixels.")
    height: int = Field(512, ge=64, le=2048, description="Video height in pixels.")
    fps: int = Field(25, ge=5, le=60, description="Video frame rate.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Torch device for drawing frames; auto picks CUDA when present."
    )
    torch_threads: int = Field(
        1, ge=1, le=64, description="CPU threads torch may use for drawing (CPU device only)."
    )
    motion: Literal["procedural"] = Field(
        "procedural", description="Motion source: procedural visemes driven by phonemes."
    )
    seed: int = Field(0, description="Seed of the idle motion (blinks, head sway).")
