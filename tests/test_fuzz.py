"""The whole target under generated input: every record accounted for, on any input.

One invariant (issue 18), checked by `fuzz.oracle.check` from README's rules, on the main road
and off it (issue 22): `fail` with rows Userpilot rejects, a server refusing every upload, BATCH
messages, a fingerprint store gone mid-run, SIGTERM at a random moment through the CLI.
Profiles, chosen by `HYPOTHESIS_PROFILE`: `dev` (default, about a hundred streams), `ci` (2,000+
streams, derandomized so CI is deterministic), `nightly` (20,000 streams, random, with a
database).
`FUZZ_FAILURES_DIR` collects each failing case as JSON; `FUZZ_STATS` writes the run's figures
(under pytest-xdist one file per worker, the worker's name added: `figures-gw0.json`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fuzz.oracle import check, check_deletions, last_words
from fuzz.runner import InProcessRunner, Outcome, run_subprocess
from fuzz.strategies import Case, cases, deletion_cases, off_road_cases, signalled_cases
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from target_userpilot.emulator import EmulatorConfig, serve

if TYPE_CHECKING:
    from collections.abc import Iterator

    from target_userpilot.emulator import Emulator

_COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
# dev and ci are derandomized (a CI run never fails on a fresh random draw); nightly explores.
settings.register_profile("dev", max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile("ci", max_examples=2000, derandomize=True, database=None, **_COMMON)
settings.register_profile(
    "nightly",
    max_examples=20_000,
    database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
    **_COMMON,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
_EXAMPLES = settings.get_profile(PROFILE).max_examples
# Nine cases in ten on the main road, one off it (issue 22: `fail` with rejected rows, a server
# refusing everything, BATCH messages, a fingerprint store gone mid-run); the profile's total
# stays the same.
IN_PROCESS = settings(settings.get_profile(PROFILE), max_examples=_EXAMPLES * 9 // 10)
OFF_ROAD = settings(IN_PROCESS, max_examples=max(10, _EXAMPLES // 10))
# One case in fifty also goes through the real CLI in a child process (about a second each),
# half of them with SIGTERM at a random moment.
SUBPROCESS = settings(IN_PROCESS, max_examples=max(5, _EXAMPLES // 100))
SIGNALLED = settings(IN_PROCESS, max_examples=max(5, _EXAMPLES // 100))
# One case in twenty of the profile is a deletion run (`hard_delete`, issue 21), drawn instead
# of a main-road one: its delete requests are paced in real seconds.
DELETIONS = settings(IN_PROCESS, max_examples=max(5, _EXAMPLES // 20))
GENERAL = settings(IN_PROCESS, max_examples=IN_PROCESS.max_examples - DELETIONS.max_examples)
# Seconds per test (pytest-timeout): a whole profile, not one example (the oracle bounds those).
TIMEOUT = pytest.mark.timeout({"dev": 300, "ci": 1200, "nightly": 7200}.get(PROFILE, 7200))


class Figures:
    """The closing figures of a fuzz run: streams, time, the longest example, faults drawn."""

    def __init__(self) -> None:
        """Nothing counted yet."""
        self.started = time.monotonic()
        self.streams = 0
        self.second_runs = 0
        self.longest = (0.0, 0)
        self.faults: Counter[str] = Counter()
        self.exits: Counter[int] = Counter()
        self.roads: Counter[str] = Counter()
        self.marks: Counter[str] = Counter()  # deletion runs: how each record's marks read
        self.findings = 0

    def add(self, case: Case, outcome: Outcome, *, second: bool) -> None:
        """Count one run; every 500 runs the figures so far go to `FUZZ_STATS`."""
        self.streams += 1
        self.second_runs += second
        self.longest = max(self.longest, (outcome.seconds, len(case.lines)))
        self.faults.update(outcome.faults_drawn)
        self.exits[outcome.exit_code] += 1
        self.roads[case.road] += 1
        if self.streams % 500 == 0:
            self.write()

    def write(self) -> None:
        """The figures so far, to the file `FUZZ_STATS` names (if set)."""
        path = os.environ.get("FUZZ_STATS")
        if path:
            # Each pytest-xdist worker counts the examples it ran: a file per worker.
            worker = os.environ.get("PYTEST_XDIST_WORKER")
            stats = Path(path)
            if worker:
                stats = stats.with_name(f"{stats.stem}-{worker}{stats.suffix}")
            stats.write_text(json.dumps(self.report(), indent=2) + "\n")

    def report(self) -> dict[str, Any]:
        """The figures, as a JSON-able dict."""
        minutes = (time.monotonic() - self.started) / 60
        return {
            "profile": PROFILE,
            "streams": self.streams,
            "of_which_second_runs": self.second_runs,
            "streams_per_minute": round(self.streams / minutes) if minutes else None,
            "longest_example_seconds": round(self.longest[0], 3),
            "longest_example_lines": self.longest[1],
            "faults_drawn": dict(self.faults),
            "exit_codes": {str(k): v for k, v in self.exits.items()},
            "roads": dict(self.roads),
            "deletion_runs_records": dict(self.marks),
            "findings": self.findings,
        }


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[Emulator]:
    with serve(EmulatorConfig(rows_per_minute=float("inf")), port=0) as emu:
        yield emu


@pytest.fixture(scope="module")
def figures() -> Iterator[Figures]:
    counted = Figures()
    yield counted
    print(f"\nfuzz figures: {json.dumps(counted.report())}")  # noqa: T201 - in CI logs
    counted.write()


def _verdict(case: Case, outcome: Outcome, figures: Figures, *, second: bool = False) -> None:
    figures.add(case, outcome, second=second)
    for fault in outcome.faults_drawn:
        event(f"fault: {fault}")
    event(f"exit {outcome.exit_code}")
    problems = (check_deletions if case.settings.get("hard_delete") else check)(case, outcome)
    if problems:
        figures.findings += 1
        note(f"log:\n{outcome.log[-3000:]}")
        folder = os.environ.get("FUZZ_FAILURES_DIR")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            name = Path(folder) / f"failure-{time.time_ns()}.json"
            record = {"lines": case.lines, "settings": case.settings, "problems": problems}
            name.write_text(json.dumps({**record, "faults": repr(case.faults)}, indent=1))
    assert not problems, "\n".join(problems)


@TIMEOUT
@given(case=cases())
@GENERAL
def test_every_record_is_accounted_for(
    shared_emulator: Emulator, figures: Figures, case: Case
) -> None:
    runner = _runner(shared_emulator)
    with (
        tempfile.TemporaryDirectory(prefix="fuzz-") as work,
        tempfile.TemporaryDirectory(prefix="fuzz-again-") as again,
    ):
        outcome = runner.run(case, Path(work))
        _verdict(case, outcome, figures)
        if case.settings.get("send_only_changes") and not case.settings.get("dry_run"):
            # The same input again on the same account: unchanged profiles are skipped, and
            # every record is still accounted for exactly once.
            event("send_only_changes: second run")
            outcome = runner.run(case, Path(again), again_after=Path(work))
            _verdict(case, outcome, figures, second=True)


@TIMEOUT
@given(case=cases())
@SUBPROCESS
def test_every_record_is_accounted_for_through_the_cli(
    shared_emulator: Emulator, figures: Figures, case: Case
) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-cli-") as work:
        outcome = run_subprocess(shared_emulator, case, Path(work))
        _verdict(case, outcome, figures)


@TIMEOUT
@given(case=off_road_cases())
@OFF_ROAD
def test_off_the_main_road_every_record_is_accounted_for(
    shared_emulator: Emulator, figures: Figures, case: Case
) -> None:
    event(f"road: {case.road}")
    with tempfile.TemporaryDirectory(prefix="fuzz-road-") as work:
        outcome = _runner(shared_emulator).run(case, Path(work))
        _verdict(case, outcome, figures)


@TIMEOUT
@given(case=signalled_cases())
@SIGNALLED
def test_a_sigterm_at_any_moment_keeps_every_promise(
    shared_emulator: Emulator, figures: Figures, case: Case
) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-signal-") as work:
        outcome = run_subprocess(shared_emulator, case, Path(work))
        event(f"SIGTERM after {case.signal_after} s: exit {outcome.exit_code}")
        _verdict(case, outcome, figures)


@TIMEOUT
@given(case=deletion_cases())
@DELETIONS
def test_only_what_the_source_deleted_is_deleted(
    shared_emulator: Emulator, figures: Figures, case: Case
) -> None:
    _, readings = last_words(case)
    figures.marks.update(readings)
    for reading in readings:
        event(f"record: {reading}")
    event(f"stream map: {_map_name(case)}")
    with tempfile.TemporaryDirectory(prefix="fuzz-delete-") as work:
        _verdict(case, _runner(shared_emulator).run(case, Path(work)), figures)


def _map_name(case: Case) -> str:
    maps = case.settings.get("stream_maps") or {}
    return json.dumps(next(iter(maps.values()), None))


_RUNNERS: dict[int, InProcessRunner] = {}


def _runner(emu: Emulator) -> InProcessRunner:
    """One runner per emulator: building the click command once keeps the root logger clean."""
    if id(emu) not in _RUNNERS:
        _RUNNERS.clear()
        _RUNNERS[id(emu)] = InProcessRunner(emu)
    return _RUNNERS[id(emu)]
