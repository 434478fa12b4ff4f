"""A load test's verdicts as JUnit XML, the format every CI system reads.

One ``<testsuite>`` named after the agent; one ``<testcase>`` per threshold
(its name is the threshold as written, a ``<failure>`` says the value
measured), plus one named ``run`` for the check every load test gets (some
trigger placed, at most half of them failed; see
:func:`.thresholds.run_problem`), so a run that tested nothing shows red in
CI even without thresholds. Written with :mod:`xml.etree.ElementTree`, which
escapes whatever the expressions hold.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .metrics import LoadTestResult
from .thresholds import run_problem

__all__ = ["render_junit", "write_junit"]

_CLASSNAME = "voicehub.loadtest"


def render_junit(result: LoadTestResult) -> str:
    """The JUnit XML document for ``result`` (with its ``verdicts``)."""
    info = result.info
    problem = run_problem(result)
    failures = sum(not v.passed for v in result.verdicts) + (problem is not None)
    suite = ET.Element(
        "testsuite",
        {
            "name": f"voicehub loadtest {info.agent_id}",
            "tests": str(len(result.verdicts) + 1),
            "failures": str(failures),
            "errors": "0",
            "skipped": "0",
            "time": f"{info.wall_seconds:.3f}",
            "timestamp": info.started_at,
        },
    )
    run = ET.SubElement(suite, "testcase", {"classname": _CLASSNAME, "name": "run", "time": "0"})
    if problem is not None:
        ET.SubElement(run, "failure", {"message": problem, "type": "run"}).text = problem
    for verdict in result.verdicts:
        threshold = verdict.threshold
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"{_CLASSNAME}.thresholds", "name": threshold.expression, "time": "0"},
        )
        if not verdict.passed:
            message = f"{threshold.metric} was {verdict.shown}: {threshold.expression} failed"
            if info.aborted_by == threshold.expression:
                message += " (it stopped the ramp early)"
            ET.SubElement(case, "failure", {"message": message, "type": "threshold"}).text = message
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(result: LoadTestResult, path: str | Path) -> Path:
    """Write :func:`render_junit` to ``path`` (UTF-8); returns the path."""
    target = Path(path)
    target.write_text(render_junit(result), encoding="utf-8")
    return target
