"""Fixtures of the reliability suite: the integration fixtures, repeat counts and the figures.

Every fault test runs ``REPEATS`` times (``REELBOT_SOAK_REPEATS``: small in ``make test``, 20 in
``make soak``) and adds what it saw to ``FIGURES``: jobs accepted, delivered, duplicated
(posted more than once), lost (accepted, never posted) and the recovery time. At the end of the
run the figures are printed as a table and written as JSON (``REELBOT_RELIABILITY_REPORT``;
``make soak`` writes ``bench/results/reliability.json``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import (  # noqa: F401 (fixtures re-exported for this folder)
    catalog,
    consumer,
    data_dir,
    own_server,
    queue,
    redis,
    runner,
    server,
    settings,
    start_workers,
)

REPEATS = max(1, int(os.environ.get("REELBOT_SOAK_REPEATS", "1")))
"""How many times each fault is injected."""
SOAK = "REELBOT_SOAK_REPEATS" in os.environ
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@dataclass
class Fault:
    """What one fault's repeats added up to."""

    fault: str
    repeats: int = 0
    accepted: int = 0
    delivered: int = 0
    duplicated: int = 0
    lost: int = 0
    recovery_s: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        rec = out.pop("recovery_s")
        out["recovery_median_s"] = round(statistics.median(rec), 2) if rec else None
        out["recovery_max_s"] = round(max(rec), 2) if rec else None
        return out


@dataclass
class Figures:
    """The session's figures, one row per fault."""

    faults: dict[str, Fault] = field(default_factory=dict)

    def add(
        self,
        fault: str,
        *,
        accepted: int,
        posts: dict[str, int],
        recovery_s: float | None = None,
    ) -> None:
        """One repeat: ``posts`` maps each accepted job to how many times it was posted."""
        row = self.faults.setdefault(fault, Fault(fault))
        row.repeats += 1
        row.accepted += accepted
        row.delivered += sum(1 for n in posts.values() if n > 0)
        row.duplicated += sum(n - 1 for n in posts.values() if n > 1)
        row.lost += accepted - sum(1 for n in posts.values() if n > 0)
        if recovery_s is not None:
            row.recovery_s.append(recovery_s)

    def report(self) -> dict[str, Any]:
        return {
            "repeats_asked": REPEATS,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "faults": [f.row() for f in self.faults.values()],
        }


FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    """The session's collector."""
    return FIGURES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the repeats in rounds (every fault once, then again), so that a soak run cut short
    still has figures for every fault."""

    def round_of(item: pytest.Item) -> int:
        if not item.path.is_relative_to(HERE):
            return 0
        callspec = getattr(item, "callspec", None)
        rep = callspec.params.get("rep", 0) if callspec is not None else 0
        return rep if isinstance(rep, int) else 0

    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (round_of(item), order[id(item)]))


def report_path() -> Path:
    configured = os.environ.get("REELBOT_RELIABILITY_REPORT")
    if configured:
        return Path(configured)
    if SOAK:
        return REPO / "bench" / "results" / "reliability.json"
    return Path(tempfile.gettempdir()) / "reelbot-reliability.json"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print the figures as a table and write them as JSON."""
    if not FIGURES.faults:
        return
    report = FIGURES.report()
    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    columns = ["fault", "repeats", "accepted", "delivered", "duplicated", "lost"]
    columns += ["recovery_median_s", "recovery_max_s"]
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"reliability: {REPEATS} repeat(s) asked per fault, {report['machine']}")
    for name in columns:
        table.add_column(name.replace("_", " "), justify="left" if name == "fault" else "right")
    for row in report["faults"]:
        table.add_row(*("-" if row[c] is None else str(row[c]) for c in columns))
    console = Console(file=terminalreporter._tw, force_terminal=False, width=120)
    console.print(table)
    terminalreporter.write_line(f"reliability figures written to {path}")


# --- load/fuzz ---
