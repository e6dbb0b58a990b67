"""Colours of the stylised avatar (sRGB hex, as a designer would hand them over)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


def hex_to_rgb(code: str) -> tuple[float, float, float]:
    """'#rrggbb' -> (r, g, b) floats in [0, 1]."""
    code = code.lstrip("#")
    if len(code) != 6:
        raise ValueError(f"colour must look like '#rrggbb', got {code!r}")
    r, g, b = (int(code[i : i + 2], 16) / 255.0 for i in (0, 2, 4))
    return (r, g, b)


@dataclass(frozen=True)
class Palette:
    """Every colour the renderer uses, by role."""

    bg_top: str = "#cfdced"
    bg_bottom: str = "#f3ebe4"
    bg_glow: str = "#fbf6f0"
    shirt: str = "#3d6e7a"
    shirt_shadow: str = "#2b525c"
    shirt_light: str = "#4f8694"
    skin: str = "#f3cdb0"
    skin_shadow: str = "#d9a184"
    skin_light: str = "#fbe0ca"
    blush: str = "#f09a8f"
    hair: str = "#4a3128"
    hair_shadow: str = "#2e1d18"
    hair_light: str = "#74503f"
    brow: str = "#4a3027"
    lash: str = "#2a1a17"
    eye_white: str = "#fbfaf8"
    eye_shadow: str = "#d9cfcb"
    iris: str = "#6b4a33"
    iris_dark: str = "#3c271b"
    pupil: str = "#140d0b"
    highlight: str = "#ffffff"
    lip: str = "#cf7f78"
    lip_dark: str = "#b4655f"
    lip_light: str = "#e39d94"
    mouth: str = "#4b1b20"
    mouth_deep: str = "#2a0c10"
    teeth: str = "#faf6f0"
    teeth_shadow: str = "#d8d0c8"
    tongue: str = "#c9636a"


def color_bank(palette: Palette, device: torch.device) -> dict[str, Tensor]:
    """The palette as (3, 1, 1) tensors on one device, built once so frames allocate none."""
    return {
        f.name: torch.tensor(
            hex_to_rgb(getattr(palette, f.name)), dtype=torch.float32, device=device
        ).view(3, 1, 1)
        for f in fields(palette)
    }
