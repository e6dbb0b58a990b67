"""The degradation ladder: trade quality for time when frames fall behind their budget.

Each rung is a ``QualityLevel``. Rung 0 is full quality; each rung below gives up one
thing, in this order: diffusion steps of the motion sampler (halved down to 1), then the
rate of new images (every other frame repeats the last image, so the video still gets
one frame per period), then resolution (drawn at half width and height, upscaled to the
output size).

``DegradationLadder`` is fed, once per frame period, the time that frame's work took
(motion plus drawing; a repeated frame costs only its motion). It averages the last
``window`` frames and steps down one rung when that average exceeds the budget, up one
rung when it has stayed under the headroom threshold for ``up_after_s``. Every change
restarts the window, so each decision is made on frames of the current rung. An up step
that has to be taken back soon after doubles the wait before the next try, so a rung that
does not fit is not retried every few seconds. Everything is counted in frames: no clock
inside, so it is deterministic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# The smallest side a face drawer is asked to draw; a half-resolution rung below it is left out.
MIN_DRAW_SIDE = 16


@dataclass(frozen=True)
class QualityLevel:
    """One rung of the ladder: what is computed for each frame period."""

    motion_steps: int  # sampler steps per motion chunk; 0 when the motion has none
    render_every: int  # 1: a new image every frame; 2: every other frame (the last repeats)
    scale: float  # 1.0: drawn at the output size; 0.5: half width and height, upscaled
    fps: int  # the output frame rate (every period still gets a frame)
    draw_width: int  # the size the image is drawn at, before upscaling
    draw_height: int

    def describe(self) -> str:
        """Short description, e.g. ``"steps 2, 25 fps, 512x512"``."""
        parts = [f"steps {self.motion_steps}"] if self.motion_steps else []
        parts.append(f"{self.fps / self.render_every:g} fps")
        parts.append(f"{self.draw_width}x{self.draw_height}")
        return ", ".join(parts)


def build_levels(fps: int, width: int, height: int, motion_steps: int = 0) -> list[QualityLevel]:
    """The ladder's rungs, full quality first.

    ``motion_steps`` are the sampler steps at full quality; 0 (procedural motion) leaves
    out the rungs that trade steps.
    """
    if fps <= 0 or width <= 0 or height <= 0 or motion_steps < 0:
        raise ValueError(
            f"need a positive fps and size and motion_steps >= 0, got fps={fps}, "
            f"size={width}x{height}, motion_steps={motion_steps}"
        )

    def level(steps: int, every: int, scale: float) -> QualityLevel:
        w, h = max(round(width * scale), 1), max(round(height * scale), 1)
        return QualityLevel(steps, every, scale, fps, w, h)

    steps = motion_steps
    levels = [level(steps, 1, 1.0)]
    while steps > 1:
        steps //= 2  # 8 -> 4 -> 2 -> 1, 4 -> 2 -> 1, 3 -> 1
        levels.append(level(steps, 1, 1.0))
    levels.append(level(steps, 2, 1.0))
    half = level(steps, 2, 0.5)
    if min(half.draw_width, half.draw_height) >= MIN_DRAW_SIDE:
        levels.append(half)
    return levels


class DegradationLadder:
    """Picks the rung whose frame work fits the frame period; see the module docstring."""

    def __init__(
        self,
        levels: list[QualityLevel],
        fps: int,
        *,
        budget_ratio: float = 0.85,
        headroom_ratio: float = 0.5,
        window: int = 8,
        up_after_s: float = 2.0,
        max_up_after_s: float = 30.0,
    ) -> None:
        if not levels:
            raise ValueError("the ladder needs at least one quality level")
        if not 0 < headroom_ratio < budget_ratio:
            raise ValueError(
                f"need 0 < headroom_ratio < budget_ratio, got {headroom_ratio} and {budget_ratio}"
            )
        if window < 1 or fps <= 0:
            raise ValueError(f"need window >= 1 and fps > 0, got {window} and {fps}")
        self.levels = levels
        period = 1.0 / fps
        self.budget_s = budget_ratio * period
        self.headroom_s = headroom_ratio * period
        self._up_after = max(round(up_after_s * fps), 1)  # frames of headroom before up
        self._max_up_after = max(round(max_up_after_s * fps), self._up_after)
        self._wait_up = self._up_after  # grows while up steps keep failing
        self._window: deque[float] = deque(maxlen=window)
        self._calm = 0  # consecutive full windows under the headroom threshold
        self._since_up: int | None = None  # frames since the last up step (None: not on trial)
        self.index = 0
        self.changes = 0
        self.decided_load_s = 0.0  # the window mean the last decision was made on

    @property
    def level(self) -> QualityLevel:
        """The current rung."""
        return self.levels[self.index]

    @property
    def saturated(self) -> bool:
        """At the lowest rung, and frames are still over budget: nothing left to give up."""
        return self.index == len(self.levels) - 1 and self.decided_load_s > self.budget_s

    @property
    def load_s(self) -> float:
        """Mean frame work over the current window (0 before the first frame)."""
        return sum(self._window) / len(self._window) if self._window else 0.0

    def observe(self, work_s: float) -> QualityLevel | None:
        """One frame period's work; returns the new rung when it changes, else None."""
        self._window.append(work_s)
        if self._since_up is not None:
            self._since_up += 1
            if self._since_up >= self._up_after:  # the up step held: back to the short wait
                self._since_up = None
                self._wait_up = self._up_after
        if len(self._window) < (self._window.maxlen or 1):
            return None  # every decision is made on a full window of the current rung
        load = self.decided_load_s = self.load_s
        if load > self.budget_s and self.index < len(self.levels) - 1:
            if self._since_up is not None:  # the last up step did not fit: wait longer
                self._wait_up = min(2 * self._wait_up, self._max_up_after)
            return self._move(+1)
        self._calm = self._calm + 1 if load < self.headroom_s else 0
        if self.index > 0 and self._calm >= self._wait_up:
            level = self._move(-1)
            self._since_up = 0
            return level
        return None

    def _move(self, delta: int) -> QualityLevel:
        self.index += delta
        self.changes += 1
        self._window.clear()
        self._calm = 0
        self._since_up = None
        return self.level
