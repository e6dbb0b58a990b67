"""The settings: defaults < file < environment < flags, and a clear error for every bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigError, describe_settings, load_settings


def test_later_sources_win(tmp_path: Path) -> None:
    config = tmp_path / "visage.toml"
    config.write_text(
        '[llm]\nmodel = "from-file"\nbase_url = "http://file/v1"\n[avatar]\nfps = 20\n'
    )
    environ = {"VISAGE_LLM__MODEL": "from-env", "VISAGE_AVATAR__WIDTH": "256"}
    settings = load_settings(config, {"llm": {"base_url": "http://flag/v1"}}, environ)
    assert settings.llm.model == "from-env"
    assert settings.llm.base_url == "http://flag/v1"
    assert (settings.avatar.fps, settings.avatar.width) == (20, 256)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("file", r"llm\.base_ur: unknown key \(did you mean 'base_url'\?\)"),
        ("flag", r"llm\.baseurl: unknown key \(did you mean 'base_url'\?\)"),
        ("env", r"llm\.baseurl: unknown key \(did you mean 'base_url'\?\)"),
    ],
)
def test_a_misspelt_key_in_a_section_is_an_error_that_suggests_the_key(
    tmp_path: Path, source: str, message: str
) -> None:
    config = tmp_path / "visage.toml"
    config.write_text('[llm]\nbase_ur = "http://x/v1"\n' if source == "file" else "")
    overrides = {"llm": {"baseurl": "http://x/v1"}} if source == "flag" else None
    environ = {"VISAGE_LLM__BASEURL": "http://x/v1"} if source == "env" else {}
    with pytest.raises(ConfigError, match=message):
        load_settings(config, overrides, environ)


def test_an_unknown_key_far_from_any_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"avatar\.zzz: unknown key \(known keys: width, "):
        load_settings(None, {"avatar": {"zzz": 1}}, {})
    with pytest.raises(ConfigError, match=r"sever: unknown key \(did you mean 'server'\?\)"):
        load_settings(None, {"sever": {"port": 1}}, {})


def test_a_bad_value_says_which_key_and_why() -> None:
    with pytest.raises(ConfigError, match=r"server\.port: Input should be less than or equal"):
        load_settings(None, {"server": {"port": 70000}}, {})


def test_config_show_documents_every_key_and_masks_secrets() -> None:
    settings = load_settings(None, {"llm": {"api_key": "sk-secret"}}, {})
    text = describe_settings(settings)
    assert "sk-secret" not in text and "api_key = '***'" in text
    assert "face = 'stylised'  # Face drawer" in text


def test_the_cli_exits_2_on_a_misspelt_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "llm.baseurl=http://x/v1"]) == 2
    assert "did you mean 'base_url'?" in capsys.readouterr().err


def test_serve_refuses_to_start_with_an_stt_engine_it_cannot_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-model"
    argv = ["serve", "--set", "stt.engine=whisper", "--set", f"stt.whisper_model={missing}"]
    assert main(argv) == 2  # before listening: a started server would block here
    err = capsys.readouterr().err
    assert "stt.engine is 'whisper'" in err and "visage serve:" in err


def test_an_automatic_stt_fallback_is_a_warning_at_start(tmp_path: Path) -> None:
    from loguru import logger

    from pipelines.config import LLMSettings, STTSettings
    from pipelines.conversation import check_engines

    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        engines = check_engines(STTSettings(whisper_model=str(tmp_path / "gone")), LLMSettings())
    finally:
        logger.remove(sink)
    assert engines["stt"].startswith("moonshine tiny-en (embedded): whisper model")
    assert any("falling back to the embedded Moonshine" in w for w in warnings)
