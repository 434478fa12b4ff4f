"""The simulator's command-line options map onto its configuration."""

from __future__ import annotations

import argparse

import pytest

from voicehub_async.simulator.__main__ import add_arguments, config_from_args


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_webhooks_take_the_url_from_a_flag_and_the_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOICEHUB_WEBHOOK_SECRET", "shh")
    config = config_from_args(
        _parse("--webhook-url", "http://127.0.0.1:9000/hook", "--webhook-repeat-rate", "0.1")
    )
    assert config.webhook_url == "http://127.0.0.1:9000/hook"
    assert config.webhook_secret == "shh"
    assert config.webhook_repeat_rate == 0.1
    assert "shh" not in repr(config)


def test_a_webhook_url_without_a_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICEHUB_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ValueError, match="secret"):
        config_from_args(_parse("--webhook-url", "http://127.0.0.1:9000/hook"))


def test_no_webhooks_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEHUB_WEBHOOK_SECRET", "shh")
    config = config_from_args(_parse())
    assert config.webhook_url is None and config.webhook_secret is None
