"""The command line's input rough edges: --default-region, extensions, options per command.

Nothing here reaches a server: every case exits 2 before the key is read
(or is argparse's own refusal).
"""

from __future__ import annotations

import pytest

from voicehub_async.cli import main

NUMBER = "+14155550123"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse refusing an option
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Bad input must be reported before the key is even looked at.
    monkeypatch.delenv("VOICEHUB_API_KEY", raising=False)


def test_an_unknown_default_region_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["call", "--to", "415 555 0123", "--agent", "a", "--default-region", "XX"]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("voicehub: error: --default-region 'XX'")
    assert "region code" in err
    assert "no country code" not in err


@pytest.mark.parametrize("to", ["+1 415 555 0123x", "+1 415 555 0123 ext. 12", "+14155550123x7"])
def test_an_extension_or_trailing_mark_is_refused(
    capsys: pytest.CaptureFixture[str], to: str
) -> None:
    code, _, err = run(capsys, "call", "--to", to, "--agent", "a")
    assert code == 2
    assert err.startswith("voicehub: error: --to")
    assert "cannot dial an extension" in err


@pytest.mark.parametrize("command", ["status", "recording"])
def test_commands_without_numbers_do_not_offer_a_default_region(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "--default-region" not in out
    assert "--base-url" in out
    code, _, err = run(capsys, command, "call-1", "--default-region", "US")
    assert code == 2
    assert "--default-region" in err


def test_call_still_offers_a_default_region(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "call", "--help")
    assert code == 0
    assert "--default-region" in out
