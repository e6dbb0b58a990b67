"""Shared pytest fixtures; register with ``pytest_plugins = ["tests.helpers.fixtures"]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.tiny_whisper import build_tiny_whisper


@pytest.fixture(scope="session")
def tiny_whisper_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random faster-whisper model folder, built once per test session (~4 s)."""
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper") / "model")
