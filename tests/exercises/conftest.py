"""Prints the points of each graded assignment at the end of a pytest run (see grading.py)."""
from __future__ import annotations


def pytest_terminal_summary(terminalreporter) -> None:
    scores: dict[str, list[int]] = {}
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", None) != "call":
                continue
            props = dict(report.user_properties)
            if "assignment" not in props:
                continue
            stem, total = props["assignment"].rsplit(":", 1)
            earned = scores.setdefault(stem, [0, int(total)])
            if outcome == "passed":
                earned[0] += int(props["points"])
    if scores:
        terminalreporter.section("points")
        for stem, (earned, total) in sorted(scores.items()):
            terminalreporter.write_line(f"{stem}: {earned}/{total} points")
