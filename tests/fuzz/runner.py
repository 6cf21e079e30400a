"""Run one generated case through the real target and gather what a user would see.

`InProcessRunner` runs `TargetUserpilot.cli` inside the test process (click, `standalone_mode=
False`, `--input` file), capturing stdout (snapshotting the emulator at each STATE line) and the
log records, against one shared emulator that is reset per case: about 15 ms of overhead where
a CLI subprocess costs a second. `run_subprocess` runs the same case through the real CLI in a
child process, for the process-level parts (exit status, stderr, memory).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import resource
import signal
import sqlite3
import subprocess
import time
import traceback
import uuid
from contextlib import ExitStack, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

from singer_io import run_target

from fuzz.strategies import WORK
from target_userpilot.emulator import EmulatorConfig
from target_userpilot.emulator.validation import ID_KEY
from target_userpilot.fingerprints import open_store as real_open_store
from target_userpilot.run.deadletters import DRY_RUN_LETTERS
from target_userpilot.target import TargetUserpilot

if TYPE_CHECKING:
    import click

    from fuzz.strategies import Case
    from target_userpilot.emulator import Emulator

EMULATOR_LOGGER = "target_userpilot.emulator"
DRY_RUN_DIR = "dry-run"
BATCH_DIR = "batches"
DEAD_LETTERS = "dead-letters.ndjson"
RUN_MARKER_KEYS = {"run", "started_at", "target_version"}
FINGERPRINTS = "fingerprints.sqlite"


@dataclass
class StateSeen:
    """A STATE line as emitted, with what Userpilot and the dead-letter file held right then."""

    line: str
    users: set[str]
    companies: set[str]
    dead_letter_positions: set[int]
    # Events the emulator's Track API had accepted (every run's); in process only.
    events: int | None = None
    deletions: set[tuple[str, str]] = field(default_factory=set)
    """(kind, id) of the deletions Userpilot had accepted right then (in-process runs)."""
    job_letters: set[str] = field(default_factory=set)
    """The jobs dead letters named right then (a subprocess run: those named at its end)."""


@dataclass
class Outcome:
    """What one run left behind."""

    exit_code: int
    states: list[StateSeen]
    log: str
    errors: list[str]
    crash: str | None
    dead_letters: list[dict[str, Any]]
    leftover: list[str]
    key_seen_in: list[str]
    users: dict[str, dict[str, Any]]
    companies: dict[str, dict[str, Any]]
    uploads: int
    dry_run_ids: dict[str, set[str]]
    seconds: float
    peak_rss_kb: int
    faults_drawn: list[str] = field(default_factory=list)
    deletions: set[tuple[str, str]] = field(default_factory=set)
    """(kind, id) of every deletion Userpilot accepted (in-process runs)."""
    jobs_completed: int | None = None
    """Jobs Userpilot completed in the run (in-process runs)."""
    rejected_in_jobs: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    """Per job Userpilot completed: the (kind, id) of the rows it rejected."""


# Job phases beyond queued/processing, where the emulator has them: instant here, as the rate.
_INSTANT: dict[str, Any] = {"validating_seconds": 0.0, "pending_refresh_seconds": 0.0}


def emulator_config(key: str, faults: dict[str, Any]) -> EmulatorConfig:
    """The emulator for one case: unlimited rate, no Retry-After wait, the drawn faults."""
    known = {f.name for f in dataclasses.fields(EmulatorConfig)}
    instant = {name: value for name, value in _INSTANT.items() if name in known}
    return EmulatorConfig(
        token=key, rows_per_minute=float("inf"), retry_after_seconds=0, **instant, **faults
    )


def target_config(
    case: Case, key: str, url: str, work: Path, fingerprints: Path | None = None
) -> dict[str, Any]:
    """The drawn settings, with every path inside `work` (the fingerprints' may be elsewhere)."""
    return {
        **case.settings,
        "api_key": key,
        "api_url": url,
        "batch_dir": str(work / BATCH_DIR),
        "dead_letter_path": str(work / DEAD_LETTERS),
        "dry_run_dir": str(work / DRY_RUN_DIR),
        "fingerprint_store_path": str(fingerprints or work / FINGERPRINTS),
    }


def letters_path(case: Case, work: Path) -> Path:
    """Where the run wrote its dead letters: a dry run's are beside its files, in its folder."""
    if case.settings.get("dry_run"):
        found = sorted((work / DRY_RUN_DIR).glob(f"*/{DRY_RUN_LETTERS}"))
        return found[0] if found else work / DRY_RUN_DIR / DRY_RUN_LETTERS
    return work / DEAD_LETTERS


def _read_dead_letters(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Parsed dead letters (not the runs' marker lines), and sentences for lines not JSON."""
    if not path.exists():
        return [], []
    letters: list[dict[str, Any]] = []
    problems: list[str] = []
    for raw in path.read_bytes().splitlines():
        _parse_letter(raw, letters, problems)
    return letters, problems


def _parse_letter(raw: bytes, letters: list[dict[str, Any]], problems: list[str]) -> None:
    try:
        letter = json.loads(raw)
    except ValueError as exc:
        problems.append(f"an unreadable dead letter ({exc}): {raw[:80]!r}")
        return
    if not (isinstance(letter, dict) and set(letter) == RUN_MARKER_KEYS):
        letters.append(letter)


def _dry_run_ids(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"users": set(), "companies": set()}
    if folder.exists():
        # Each dry run's batch files are in a folder of its own (`<UTC time>-<pid>`).
        for path in folder.glob("*/userpilot-*"):
            for raw in path.read_bytes().splitlines():
                line = json.loads(raw)
                if "user_id" in line:
                    found["users"].add(line["user_id"])
                else:
                    found["companies"].add(line["company_id"])
    return found


def _texts_holding(key: str, texts: dict[str, str | bytes]) -> list[str]:
    return [
        name
        for name, text in texts.items()
        if (key.encode() if isinstance(text, bytes) else key) in text  # type: ignore[operator]
    ]


def _files(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def describe_faults(faults: dict[str, Any]) -> list[str]:
    """The faults a case draws, for the closing figures."""
    named = []
    if faults.get("fail_rate"):
        named += [f"request {k}" for k in faults["fault_kinds"]]
    named += ["failed job"] * bool(faults.get("fail_jobs"))
    named += ["lost submit response"] * bool(faults.get("drop_submit_responses"))
    named += ["rejected row"] * bool(faults.get("reject_ids"))
    named += ["every upload refused"] * bool(faults.get("refuse_uploads"))
    return named


STORE_GONE = "store gone mid-run"


class _VanishingConnection:
    """The fingerprint store's SQLite connection, whose database is gone after `left` statements:
    each later one raises what SQLite raises for a file it can no longer reach."""

    def __init__(self, conn: sqlite3.Connection, left: int) -> None:
        self._conn = conn
        self._left = left
        self.gone = False

    def _spend(self) -> None:
        if self._left <= 0:
            self.gone = True
            msg = "disk I/O error"
            raise sqlite3.OperationalError(msg)
        self._left -= 1

    def execute(self, *args: Any) -> sqlite3.Cursor:
        self._spend()
        return self._conn.execute(*args)

    def executemany(self, *args: Any) -> sqlite3.Cursor:
        self._spend()
        return self._conn.executemany(*args)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def close(self) -> None:
        self._conn.close()


def _store_goes(stack: ExitStack, after: int) -> list[_VanishingConnection]:
    """From now on the target's SQLite fingerprint store loses its database after `after`
    statements; the list gets the connection once the target opened the store."""
    opened: list[_VanishingConnection] = []

    def open_store(*args: Any, **kwargs: Any) -> Any:
        store: Any = real_open_store(*args, **kwargs)
        conn = _VanishingConnection(store._conn, after)
        store._conn = conn
        opened.append(conn)
        return store

    stack.enter_context(mock.patch("target_userpilot.target.open_store", open_store))
    return opened


class _Capture(logging.Handler):
    """Collects the target's log records (the emulator's own are not the target's output)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("{levelname} {name}: {message}", style="{"))
        self.lines: list[str] = []
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(EMULATOR_LOGGER):
            return
        text = self.format(record)
        self.lines.append(text)
        if record.levelno >= logging.ERROR:
            self.errors.append(text)


class _StateTap(io.StringIO):
    """The target's stdout: at each complete line, snapshot the emulator and the dead letters."""

    def __init__(self, emu: Emulator, dead_letters: Path) -> None:
        super().__init__()
        self._emu = emu
        self._dead_letters = dead_letters
        self._pending = ""
        self.seen: list[StateSeen] = []

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            letters, _ = _read_dead_letters(self._dead_letters)
            self.seen.append(
                StateSeen(
                    line,
                    set(self._emu.users),
                    set(self._emu.companies),
                    {d["position"] for d in letters if isinstance(d.get("position"), int)},
                    events=self._emu.events["count"],
                    deletions=accepted_deletions(self._emu),
                    job_letters=_job_letters(letters),
                )
            )
        return super().write(text)


class InProcessRunner:
    """Runs cases through `TargetUserpilot.cli` in this process, against one reused emulator."""

    def __init__(self, emu: Emulator) -> None:
        """Build the click command once (each build adds a console handler to the root logger)."""
        self.emu = emu
        root = logging.getLogger()
        before = list(root.handlers)
        self.cli: click.Command = TargetUserpilot.cli
        for handler in root.handlers:
            if handler not in before:
                root.removeHandler(handler)  # the capture below stands in for the console
        self._key = ""

    def _reset(self, key: str, faults: dict[str, Any]) -> None:
        # A fresh account per case: a new store (profiles, jobs, requests, fault plan seeded
        # from the case) behind the same server, so no server restart per example.
        self.emu._store.__init__(emulator_config(key, faults))  # type: ignore[misc]
        self.emu._deletions.__init__(self.emu._store)  # type: ignore[misc]

    def run(self, case: Case, work: Path, *, again_after: Path | None = None) -> Outcome:
        """Run `case` with every file under `work` (a fresh directory).

        With `again_after` (the previous run's directory) it is the same account's second run:
        Userpilot keeps what the first confirmed, and the fingerprints are the first run's.
        """
        if again_after is None:
            self._key = f"fz-{uuid.uuid4().hex}"
            self._reset(self._key, case.faults)
        key = self._key
        fingerprints = again_after / FINGERPRINTS if again_after else None
        config = target_config(case, key, self.emu.url, work, fingerprints)
        config_path = work / "config.json"
        config_path.write_text(json.dumps(config))
        input_path = work / "input.jsonl"
        lines = input_lines(case, work)
        input_path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="strict")
        capture = _Capture()
        root = logging.getLogger()
        # Only the capture listens while the target runs (pytest's log capture would keep
        # every line of thousands of runs).
        others, root.handlers = root.handlers, [capture]
        tap = _StateTap(self.emu, letters_path(case, work))
        crash = None
        # The target installs SIGTERM/SIGINT handlers; they must not outlive its run here.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        # This process's high-water mark only ever grows over thousands of runs: what one run
        # adds to it is that run's own excess.
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        stack = ExitStack()
        opened = [] if case.store_gone_after is None else _store_goes(stack, case.store_gone_after)
        try:
            with stack, redirect_stdout(tap):
                returned = self.cli.main(
                    ["--config", str(config_path), "--input", str(input_path)],
                    standalone_mode=False,
                )
            code = returned if isinstance(returned, int) else 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # noqa: BLE001 - an escaping exception is what the check reports
            crash = traceback.format_exc(limit=-8)
            code = 1
        finally:
            root.handlers = others
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        seconds = time.monotonic() - started
        return self._outcome(
            case=case,
            work=work,
            key=key,
            code=code,
            tap=tap,
            capture=capture,
            crash=crash,
            seconds=seconds,
            rss_before=rss_before,
            store_gone=any(conn.gone for conn in opened),
        )

    def _outcome(
        self,
        *,
        case: Case,
        work: Path,
        key: str,
        code: int,
        tap: _StateTap,
        capture: _Capture,
        crash: str | None,
        seconds: float,
        rss_before: int,
        store_gone: bool = False,
    ) -> Outcome:
        dead = letters_path(case, work)
        letters, unreadable = _read_dead_letters(dead)
        log = "\n".join(capture.lines)
        texts: dict[str, str | bytes] = {"stdout": tap.getvalue(), "log": log}
        texts.update(_files(work / DRY_RUN_DIR))
        if dead.exists():
            texts["dead letters"] = dead.read_bytes()
        return Outcome(
            exit_code=code,
            states=tap.seen,
            log=log,
            errors=capture.errors,
            crash="; ".join(filter(None, [crash, *unreadable])) or None,
            dead_letters=letters,
            leftover=sorted(_files(work / BATCH_DIR)),
            key_seen_in=_texts_holding(key, texts),
            users=self.emu.users,
            companies=self.emu.companies,
            uploads=sum(1 for r in self.emu.requests if "bulk_identify" in r.path),
            dry_run_ids=_dry_run_ids(work / DRY_RUN_DIR),
            seconds=seconds,
            peak_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before,
            faults_drawn=[*describe_faults(case.faults), *[STORE_GONE] * store_gone],
            deletions=accepted_deletions(self.emu),
            jobs_completed=sum(job.status == "completed" for job in self.emu.jobs),
            rejected_in_jobs=rejected_in_jobs(self.emu),
        )


def input_lines(case: Case, work: Path) -> list[str]:
    """The case's lines for a run in `work`, its BATCH files written there."""
    for name, text in case.files.items():
        (work / name).write_text(text, encoding="utf-8", errors="surrogatepass")
    if not case.files:
        return case.lines
    return [line.replace(WORK, str(work)) for line in case.lines]


def rejected_in_jobs(emu: Emulator) -> dict[str, set[tuple[str, str]]]:
    """Per completed job of the emulator: (kind, id) of the rows it rejected."""
    return {
        job.job_id: {(job.kind, str(row[ID_KEY[job.kind]])) for row in job.errors}
        for job in emu.jobs
        if job.status == "completed" and job.errors
    }


def _job_letters(letters: list[dict[str, Any]]) -> set[str]:
    """The jobs named by dead letters (rows Userpilot rejected in a completed job)."""
    return {d["job_id"] for d in letters if isinstance(d.get("job_id"), str)}


def accepted_deletions(emu: Emulator) -> set[tuple[str, str]]:
    """(kind, id) of the deletions the emulator has scheduled."""
    return {(s.kind, s.id) for s in emu.deletions.pending}


def run_subprocess(emu: Emulator, case: Case, work: Path) -> Outcome:
    """Run `case` through the real CLI in a child process (stdin pipe, real exit status).

    With `case.signal_after`, SIGTERM goes to the child that long after its first log line.
    """
    key = f"fz-{uuid.uuid4().hex}"
    emu._store.__init__(emulator_config(key, case.faults))  # type: ignore[misc]
    started = time.monotonic()

    def terminate(proc: subprocess.Popen[bytes]) -> None:
        # Timed from the target's first log line: Python's start-up alone takes a second or
        # more on a busy machine.
        assert case.signal_after is not None
        log = work / "stderr.log"
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline and not log.read_bytes():
            time.sleep(0.01)
        time.sleep(case.signal_after)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    run = run_target(
        target_config(case, key, emu.url, work),
        input_lines(case, work),
        work,
        emulator=emu,
        timeout=60,
        on_start=terminate if case.signal_after is not None else None,
    )
    seconds = time.monotonic() - started
    dead = letters_path(case, work)
    letters, unreadable = _read_dead_letters(dead)
    positions = {d["position"] for d in letters if isinstance(d.get("position"), int)}
    jobs = _job_letters(letters)
    texts: dict[str, str | bytes] = {"stdout": "\n".join(run.stdout_lines), "stderr": run.stderr}
    texts.update(_files(work / DRY_RUN_DIR))
    if dead.exists():
        texts["dead letters"] = dead.read_bytes()
    return Outcome(
        exit_code=run.returncode,
        states=[
            StateSeen(line, seen.users, seen.companies, positions, job_letters=jobs)
            for line, seen in zip(run.stdout_lines, run.states, strict=True)
        ],
        log=run.stderr,
        errors=[line for line in run.stderr.splitlines() if " ERROR " in f" {line} "],
        crash="; ".join(unreadable) or None,
        dead_letters=letters,
        leftover=sorted(_files(work / BATCH_DIR)),
        key_seen_in=_texts_holding(key, texts),
        users=emu.users,
        companies=emu.companies,
        uploads=sum(1 for r in emu.requests if "bulk_identify" in r.path),
        dry_run_ids=_dry_run_ids(work / DRY_RUN_DIR),
        seconds=seconds,
        peak_rss_kb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        faults_drawn=describe_faults(case.faults),
        rejected_in_jobs=rejected_in_jobs(emu),
    )
