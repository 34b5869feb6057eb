"""config: flags, environment, defaults and the call table."""

from __future__ import annotations

import pytest

from bookinfo import calls, config


def test_flags_and_defaults() -> None:
    settings = config.from_args(["--app", "books", "--version", "v2"], env={})
    assert settings == config.Settings(
        app="books",
        version="v2",
        host="0.0.0.0",
        port=9080,
        chaos_port=None,
        proxy=None,
        callee=calls.Callee("ratings", "http://ratings:9080", 10.0),
    )


def test_environment_in_place_of_flags() -> None:
    env = {
        "APP": "ui",
        "VERSION": "v1",
        "PORT": "21000",
        "HOST": "127.0.0.1",
        "CHAOS_PORT": "21004",
        "HTTP_PROXY": "http://127.0.0.1:21002",
        "GW_URL": "http://gw:9080",
    }
    settings = config.from_args([], env=env)
    assert (settings.app, settings.port, settings.host, settings.chaos_port) == (
        "ui",
        21000,
        "127.0.0.1",
        21004,
    )
    assert settings.proxy == "http://127.0.0.1:21002"
    assert settings.callee == calls.Callee("gw", "http://gw:9080", 5.0)


def test_flags_win_over_environment() -> None:
    settings = config.from_args(["--app", "gw", "--port", "1234"], env={"APP": "ui", "PORT": "9"})
    assert (settings.app, settings.port) == ("gw", 1234)
    assert settings.callee == calls.Callee("books", "http://books:9080", 3.0)


def test_call_timeout_override_and_ratings_calls_nobody() -> None:
    assert config.callee_for("books", {"CALL_TIMEOUT": "0.5", "RATINGS_URL": "http://x"}) == calls.Callee(
        "ratings", "http://x", 0.5
    )
    assert config.callee_for("ratings", {}) is None


@pytest.mark.parametrize("argv", [[], ["--app", "nope"], ["--app", "books", "--version", "v3"]])
def test_bad_input_exits(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        config.from_args(argv, env={})


def test_settings_validate_app_and_version() -> None:
    with pytest.raises(ValueError, match="unknown version"):
        config.Settings(app="books", version="v9")
