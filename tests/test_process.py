"""Process-wide settings: applied once at server start, the same however often."""

from __future__ import annotations

import sys

import aioice.ice
import pytest
import torch

from agent.config import Settings
from agent.process import LOOPBACK, avatar_runs_on_cpu, configure_process


@pytest.fixture
def process_state(monkeypatch: pytest.MonkeyPatch):
    """Put back what configure_process changes."""
    interval, threads = sys.getswitchinterval(), torch.get_num_threads()
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    yield
    sys.setswitchinterval(interval)
    torch.set_num_threads(threads)


def test_configure_process_applies_the_settings_idempotently(process_state) -> None:
    settings = Settings()
    settings.server.thread_switch_ms = 2.0
    settings.server.ice_loopback = "always"
    settings.avatar.device = "cpu"
    settings.avatar.torch_threads = 2
    configure_process(settings)
    lookup = aioice.ice.get_host_addresses
    configure_process(settings)
    assert sys.getswitchinterval() == pytest.approx(0.002)
    assert torch.get_num_threads() == 2
    assert aioice.ice.get_host_addresses is lookup, "the lookup is wrapped once"
    assert aioice.ice.get_host_addresses(True, False).count(LOOPBACK) == 1


def test_torch_threads_are_left_alone_when_the_avatar_runs_on_cuda(process_state) -> None:
    settings = Settings()
    settings.avatar.device = "cuda"
    settings.avatar.torch_threads = torch.get_num_threads() + 1
    configure_process(settings)
    assert torch.get_num_threads() == settings.avatar.torch_threads - 1
    assert avatar_runs_on_cpu("auto") is not torch.cuda.is_available()
