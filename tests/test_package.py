"""The package's top level: every public name resolves, and importing is cheap."""

from __future__ import annotations

import subprocess
import sys

import voicehub_async


def test_every_public_name_resolves() -> None:
    for name in voicehub_async.__all__:
        assert getattr(voicehub_async, name) is not None, name
    assert set(voicehub_async.__all__) <= set(dir(voicehub_async))


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        voicehub_async.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_or_its_pytest_plugin_loads_no_http_stack() -> None:
    # pytest imports the plugin in every session of a project that has the
    # package installed; it must not drag in aiohttp, phonenumbers or sqlite.
    code = (
        "import sys, voicehub_async, voicehub_async.simulator.pytest_plugin; "
        "print(sorted(m for m in ('aiohttp', 'phonenumbers', 'sqlite3', 'rich') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
