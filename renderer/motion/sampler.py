"""Few-step Euler sampler for MotionDiT's rectified flow (as diffusers' flow-match Euler).

The flow runs from noise at ``t = 0`` to motion at ``t = 1``; the model predicts the
velocity ``dx/dt``, so one Euler step is ``x += (t_next - t) * v(x, t)``. Steps are
computed in float32 whatever the model's dtype. ``shift`` > 1 spends more of the steps
near the noise end (SD3's timestep shift), < 1 near the data end.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from renderer.config import MAX_MOTION_STEPS
from renderer.motion.model import MotionDiT


def flow_times(steps: int, shift: float = 1.0) -> torch.Tensor:
    """The ``steps + 1`` flow times from 0 (noise) to 1 (data), float32."""
    if not 1 <= steps <= MAX_MOTION_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_MOTION_STEPS}, got {steps}")
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)  # noise level, 1 -> 0
    s = shift * s / (1.0 + (shift - 1.0) * s)
    return 1.0 - s


def euler_step(x: torch.Tensor, v: torch.Tensor, dt: float) -> torch.Tensor:
    """One in-place Euler step of the flow ODE, in float32."""
    return x.add_(v.float(), alpha=dt)


class FlowSampler:
    """Integrates MotionDiT's velocity from noise to a motion chunk in a few Euler steps.

    It keeps no state between calls, so one sampler may serve several threads.
    """

    def __init__(self, model: MotionDiT, steps: int = 4, shift: float = 1.0) -> None:
        self.model = model.eval()
        self.steps = steps
        self.times = flow_times(steps, shift)  # (steps + 1,)
        self._dts = [float(b - a) for a, b in zip(self.times[:-1], self.times[1:], strict=True)]

    @torch.inference_mode()
    def sample(
        self,
        ctx: torch.Tensor,
        noise: torch.Tensor,
        velocity: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Motion chunk (B, C, M) in model units from standard normal noise (B, C, M), given
        ``model.context``.

        ``noise`` is scaled to the model's source distribution and integrated in place
        (it is the sampler's working buffer). ``velocity`` stands in for the model's
        forward (a traced copy of it); default: the model itself.
        """
        v_of = velocity or self.model
        x = noise.float().mul_(self.model.source_std)
        t = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)  # (B,)
        for time, dt in zip(self.times[:-1].tolist(), self._dts, strict=True):
            v = v_of(x, t.fill_(time), ctx)  # (B, C, M)
            euler_step(x, v, dt)
        return x
