"""Benchmark target-userpilot through its real CLI against the bundled emulator.

Every measurement runs `python -m target_userpilot.target --config ...` as a subprocess with
real pipes (stdin fed from an input file generated beforehand, so a tap's cost is not
measured), against an emulator served in this process. Wall time runs from the start of the
process until it exits, which includes waiting for the last Userpilot job.

    uv sync --all-groups          # matplotlib and meltanolabs-target-csv (the baseline)
    uv run python scripts/bench.py [--quick] [--only NAME] [--out DIR]

Measurements (`--only` takes one of these names):

- throughput: records/s on users of nine fields, flat (one date-time) and nested (an address
  object), emulator unlimited, with default settings and with `validate_records: false`,
  beside the same inputs through `target-csv`.
- stages: where a record's time goes, in this process: each stage of the per-record path
  timed alone (CPU time) over the same records, beside the whole run; flat, nested, and an
  unchanged rerun with `send_only_changes`.
- slots: the emulator at 2,000 rows/s; how busy the one job slot stays (from the emulator's
  job records), counting the first jobs; the target's own idle time per gap (a job's end to
  the next upload starting to arrive); polls per job; draws `slot-timeline.png`.
- memory: peak RSS of the target process at 1,000,000 records (emulator unlimited).
- tap: how long the tap is held (its input not read in full) for 200,000 users against an
  emulator at 4,000 rows/s, beside an instant one: waiting batches spool to disk.
- duplicates: rows sent / records received on an input where 20% of the records are later
  updates of an id seen shortly before, against an instant emulator and a 4,000 rows/s one.
- changes: `send_only_changes` over three runs: everything, the same input, 1% changed.
- rerun: `send_only_changes` on 1,000,000 users sent before: records/s and peak RSS of the
  run that finds every profile unchanged.
- stores: `rerun` with the fingerprints in PostgreSQL (`TARGET_USERPILOT_TEST_PG_URL`, else a
  local server that `.ci/postgres` starts; skipped without one).
- large_reruns: `rerun` at 3,000,000 users (and 10,000,000 with `--long`, outside CI: hours
  and ~4 GB of scratch input), with SQLite and with PostgreSQL.
- states: peak RSS of 300,000 users with a 2 KB STATE after every record.
- waiting: in this process, what a row costs while its batch waits in the spool behind others
  (200,000 rows in batches of 10,000): memory held a row (`tracemalloc`), and CPU time a row to
  join the spool, be looked up once, leave it and be sealed, beside batches that leave at once.
- events: an `events` stream beside a users stream, against the emulator's Track API limit of
  600 a minute, at the default `track_requests_per_minute` (540): events accepted a minute
  (first to last arrival), 429 answers, and the bulk slot's utilization beside the same users
  loaded without events.

Each figure the project set a goal for is also listed under `goals` in `results.json`, with
whether it was met.

Results go to `<out>/results.json` (figures, machine, git commit) and the table to stdout.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import gc
import io
import itertools
import json
import logging
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import requests

from target_userpilot.emulator import EmulatorConfig, JobRecord, RequestRecord, serve
from target_userpilot.profiles import Profile, to_profile
from target_userpilot.run.batches import BatchFile, BatchLimits
from target_userpilot.run.spool import Spool
from target_userpilot.singer.sinks import ProfileSink
from target_userpilot.target import TargetUserpilot

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from target_userpilot.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"  # noqa: S105 - the emulator's key, not a secret
UNLIMITED = float("inf")
PG_URL_ENV = "TARGET_USERPILOT_TEST_PG_URL"
# Lines per chunk when timing the stages one by one.
_STAGE_CHUNK = 100

USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "user_id": {"type": "string"},
        "email": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "company_id": {"type": ["string", "null"]},
        "plan": {"type": ["string", "null"]},
        "signed_up_at": {"type": ["string", "null"], "format": "date-time"},
        "logins": {"type": ["integer", "null"]},
        "score": {"type": ["number", "null"]},
        "address": {
            "type": ["object", "null"],
            "properties": {
                "city": {"type": ["string", "null"]},
                "country": {"type": ["string", "null"]},
            },
        },
    },
    "required": ["user_id"],
}
# The same nine fields with the address's city as a plain top-level string.
FLAT_USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{k: v for k, v in USER_SCHEMA["properties"].items() if k != "address"},
        "city": {"type": ["string", "null"]},
    },
    "required": ["user_id"],
}
PLANS = ("free", "starter", "pro", "enterprise")
CITIES = (("Berlin", "DE"), ("Lyon", "FR"), ("Austin", "US"), ("Osaka", "JP"), ("Porto", "PT"))


@dataclass(frozen=True)
class Sizes:
    """How many records each measurement uses."""

    throughput: int
    stages: int
    slots: int
    slot_rows_per_minute: float
    memory: int
    duplicates: int
    changes: int
    rerun: int
    repeats: int
    stores: int
    tap: int = 200_000
    large_reruns: tuple[int, ...] = (3_000_000,)
    states: int = 300_000
    events: int = 1_620  # three minutes at 540 a minute
    event_users: int = 60_000
    waiting: int = 200_000


FULL = Sizes(
    throughput=200_000,
    stages=50_000,
    slots=200_000,
    slot_rows_per_minute=120_000,
    memory=1_000_000,
    duplicates=200_000,
    changes=100_000,
    rerun=1_000_000,
    repeats=2,
    stores=1_000_000,
)
QUICK = Sizes(
    throughput=5_000,
    stages=2_000,
    slots=30_000,
    slot_rows_per_minute=1_200_000,
    memory=20_000,
    duplicates=10_000,
    changes=3_000,
    rerun=5_000,
    repeats=1,
    stores=3_000,
    tap=5_000,
    large_reruns=(10_000,),
    states=5_000,
    events=180,
    event_users=6_000,
    waiting=20_000,
)
LONG_RERUNS = (3_000_000, 10_000_000)
# Userpilot's pace is 20 to 30 rows/s; this is it sped up ~160 times, for a run of a minute.
PACED_ROWS_PER_MINUTE = 240_000


# --- input ---------------------------------------------------------------------------------


def unlimited() -> EmulatorConfig:
    """An emulator that finishes every job at once: measures the target, not Userpilot.

    The API reference's `validating` and `pending_refresh` phases (0.25 s each by default)
    would otherwise cap throughput at 10,000 rows per half second of server time.
    """
    return EmulatorConfig(
        token=TOKEN, rows_per_minute=UNLIMITED, validating_seconds=0.0, pending_refresh_seconds=0.0
    )


def user(i: int, version: int = 0) -> dict[str, Any]:
    """User number `i`; a higher `version` is a later update of the same user."""
    city, country = CITIES[i % len(CITIES)]
    return {
        "user_id": f"u{i}",
        "email": f"user{i}@example.com",
        "name": f"User {i}",
        "company_id": f"c{i % 5_000}",
        "plan": PLANS[(i + version) % len(PLANS)],
        "signed_up_at": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:07Z",
        "logins": i % 997 + version,
        "score": round((i % 10_000) / 100 + version / 10, 2),
        "address": {"city": city, "country": country},
    }


def flat_user(i: int, version: int = 0) -> dict[str, Any]:
    """`user(i, version)` with the address's city as a top-level field (FLAT_USER_SCHEMA)."""
    record = user(i, version)
    record["city"] = record.pop("address")["city"]
    return record


# Input shape -> (schema, record maker).
SHAPES: dict[str, tuple[dict[str, Any], Callable[[int], dict[str, Any]]]] = {
    "flat": (FLAT_USER_SCHEMA, flat_user),
    "nested": (USER_SCHEMA, user),
}


def write_input(
    path: Path,
    records: Iterable[dict[str, Any]],
    state_every: int = 10_000,
    schema: dict[str, Any] = USER_SCHEMA,
    state_streams: int = 0,
) -> int:
    """SCHEMA, the RECORDs with a STATE every `state_every`, a final STATE; returns the count.

    `state_streams`: each STATE also holds a bookmark for that many streams (~50 bytes each).
    """
    count = 0
    with path.open("w") as out:
        header = {
            "type": "SCHEMA",
            "stream": "users",
            "schema": schema,
            "key_properties": ["user_id"],
        }
        out.write(json.dumps(header) + "\n")
        for rec in records:
            out.write(json.dumps({"type": "RECORD", "stream": "users", "record": rec}) + "\n")
            count += 1
            if count % state_every == 0:
                out.write(json.dumps(_state(count, state_streams)) + "\n")
        out.write(json.dumps(_state(count, state_streams)) + "\n")
    return count


def _state(count: int, streams: int) -> dict[str, Any]:
    value: dict[str, Any] = {"offset": count}
    if streams:
        bookmark = {"replication_key_value": f"2024-06-01T00:00:00.{count:06d}Z"}
        value["bookmarks"] = {f"public-table_{k:03d}": bookmark for k in range(streams)}
    return {"type": "STATE", "value": value}


def plain_users(n: int, make: Callable[[int], dict[str, Any]] = user) -> Iterator[dict[str, Any]]:
    """Users 0..n-1, once each."""
    return (make(i) for i in range(n))


def write_shape(path: Path, shape: str, n: int) -> int:
    """`n` users of an input shape (`flat` or `nested`)."""
    schema, make = SHAPES[shape]
    return write_input(path, plain_users(n, make), schema=schema)


def changed_users(n: int, share: float, seed: int = 1) -> Iterator[dict[str, Any]]:
    """Users 0..n-1 with a random `share` of them updated (one field differs)."""
    rng = random.Random(seed)  # noqa: S311 - test data
    changed = set(rng.sample(range(n), round(n * share)))
    return (user(i, version=1 if i in changed else 0) for i in range(n))


def duplicated_users(
    n: int, share: float, window: int = 20_000, seed: int = 2
) -> Iterator[dict[str, Any]]:
    """`n` records, a `share` of which re-emit an id seen in the last `window` records.

    Like a tap re-emitting a row updated during the sync: each duplicate is a later version
    of a user emitted 1 to `window` records earlier (uniformly), so with batches of 10,000
    some duplicates land in the same batch as their original and some in the next one.
    """
    rng = random.Random(seed)  # noqa: S311 - test data
    duplicate_at = sorted(rng.sample(range(n), round(n * share)))
    due = iter(duplicate_at)
    next_dup = next(due, None)
    fresh = 0
    emitted: list[int] = []  # id at each position
    versions: dict[int, int] = {}
    for pos in range(n):
        if pos == next_dup and emitted:
            back = rng.randint(1, min(window, len(emitted)))
            uid = emitted[-back]
            next_dup = next(due, None)
        else:
            if pos == next_dup:
                next_dup = next(due, None)
            uid = fresh
            fresh += 1
        versions[uid] = versions.get(uid, -1) + 1
        emitted.append(uid)
        yield user(uid, version=versions[uid])


# --- running a target --------------------------------------------------------------------


@dataclass
class RunResult:
    """One target process, start to exit."""

    command: str
    records: int
    seconds: float
    returncode: int
    peak_rss_mb: float
    stderr: str
    stdout_lines: int
    cpu_seconds: float = 0.0
    held_seconds: float = 0.0  # from the start until the input was read in full
    jobs: list[JobRecord] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        """Input records over wall time."""
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def rows_sent(self) -> int:
        """Rows in the jobs this run submitted."""
        return sum(job.rows for job in self.jobs if not job.foreign)


def venv_executable(name: str) -> str:
    """An executable installed next to this Python (the project's venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        msg = f"{name} not found next to {sys.executable}; run `uv sync --all-groups`"
        raise FileNotFoundError(msg)
    return found


def run_process(
    command: list[str], input_path: Path, records: int, workdir: Path, timeout: float
) -> RunResult:
    """Run `command` with `input_path` piped to its stdin; wall time and peak RSS."""
    stderr_path = workdir / "stderr.log"
    lines = 0
    fed_at = 0.0

    def drain(stream: IO[bytes]) -> None:
        nonlocal lines
        for _ in stream:
            lines += 1

    with stderr_path.open("wb") as stderr, input_path.open("rb") as source:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=workdir,
            env=_ENV,
        )
        assert proc.stdin is not None  # noqa: S101
        assert proc.stdout is not None  # noqa: S101
        stdin = proc.stdin

        def feed() -> None:
            nonlocal fed_at
            try:
                shutil.copyfileobj(source, stdin, 1 << 20)
                stdin.close()
                fed_at = time.perf_counter()
            except (BrokenPipeError, ValueError):
                pass  # the target stopped reading; its return code says why

        feeder = threading.Thread(target=feed, daemon=True)
        reader = threading.Thread(target=drain, args=(proc.stdout,), daemon=True)
        feeder.start()
        reader.start()
        status, peak_kib, cpu = _wait(proc, timeout)
        seconds = time.perf_counter() - started
        feeder.join(5)
        reader.join(5)
    return RunResult(
        command=" ".join(Path(part).name if part.startswith("/") else part for part in command),
        records=records,
        seconds=seconds,
        returncode=status,
        peak_rss_mb=peak_kib / 1024,
        cpu_seconds=cpu,
        held_seconds=fed_at - started if fed_at else seconds,
        stderr=stderr_path.read_text(errors="replace"),
        stdout_lines=lines,
    )


# As installed by pip or pipx: with bytecode caches. Without them (PYTHONDONTWRITEBYTECODE is
# set on some machines) every run recompiles the SDK, about a second of each measurement.
_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, int, float]:
    """Wait for the process (killed past `timeout`); exit code, peak RSS in KiB, CPU seconds.

    The CPU seconds (user and system, all threads) are from wait4's rusage: on a busy
    machine they say more about the target's own cost than wall time does.

    The peak is the kernel's high-water mark of the process's own memory (`VmHWM`), read
    every few milliseconds until it exits. Not `ru_maxrss` from wait4/getrusage: on Linux a
    child's `ru_maxrss` starts from the parent's RSS at fork/exec (`exec_mmap` carries the
    old mm's high-water mark over), so it reported this process's emulator memory instead.
    """
    status_file = Path(f"/proc/{proc.pid}/status")
    deadline = time.monotonic() + timeout
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        try:
            match = re.search(r"VmHWM:\s+(\d+) kB", status_file.read_text())
        except OSError:
            match = None
        if match:
            peak = max(peak, int(match.group(1)))
        if time.monotonic() > deadline:
            proc.kill()
            deadline = float("inf")
        time.sleep(0.01)
    return proc.returncode, peak, usage.ru_utime + usage.ru_stime


def userpilot_command(config: dict[str, Any], workdir: Path) -> list[str]:
    """The real CLI, as the harness of a Singer pipeline would start it."""
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    return [sys.executable, "-m", "target_userpilot.target", "--config", str(config_path)]


def userpilot_config(emu: Emulator, workdir: Path, **extra: Any) -> dict[str, Any]:  # noqa: ANN401
    """Settings for a run against `emu`, batch files under `workdir`."""
    batches = workdir / "batches"
    batches.mkdir(exist_ok=True)
    return {"api_key": TOKEN, "api_url": emu.url, "batch_dir": str(batches), **extra}


def run_userpilot(
    emu: Emulator,
    input_path: Path,
    records: int,
    scratch: Path,
    *,
    timeout: float = 900,
    **extra: Any,  # noqa: ANN401 - settings
) -> RunResult:
    """One run of target-userpilot against `emu`; fails loudly if the target failed."""
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=scratch))
    known = len(emu.jobs)
    command = userpilot_command(userpilot_config(emu, workdir, **extra), workdir)
    result = run_process(command, input_path, records, workdir, timeout)
    result.jobs = emu.jobs[known:]
    if result.returncode != 0:
        msg = f"target-userpilot exited {result.returncode}:\n{result.stderr[-3000:]}"
        raise RuntimeError(msg)
    return result


def run_csv(input_path: Path, records: int, scratch: Path, *, validate: bool) -> RunResult:
    """The same input through meltanolabs-target-csv (the baseline)."""
    workdir = Path(tempfile.mkdtemp(prefix="csv-", dir=scratch))
    config = {"output_path": str(workdir / "out"), "validate_records": validate}
    (workdir / "out").mkdir()
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    command = [venv_executable("target-csv"), "--config", str(config_path)]
    result = run_process(command, input_path, records, workdir, 900)
    if result.returncode != 0:
        msg = f"target-csv exited {result.returncode}:\n{result.stderr[-3000:]}"
        raise RuntimeError(msg)
    return result


def fastest(runs: list[RunResult]) -> RunResult:
    """The run with the shortest wall time."""
    return min(runs, key=lambda r: r.seconds)


# --- measurements ------------------------------------------------------------------------

Table = list[tuple[str, str]]


def measure_throughput(sizes: Sizes, scratch: Path, _out_dir: Path, table: Table) -> dict[str, Any]:
    """Records/s of target-userpilot and target-csv, flat and nested input, with and without
    validation."""
    n = sizes.throughput
    out: dict[str, Any] = {"records": n, "repeats": sizes.repeats}
    for shape in SHAPES:
        path = scratch / f"throughput-{shape}.singer"
        write_shape(path, shape, n)
        out[shape] = _throughput_of(path, n, sizes.repeats, scratch)
        path.unlink()
        for who in ("userpilot", "csv"):
            for label in ("default", "no_validation"):
                fig = out[shape][f"{who}_{label}"]
                table.append(
                    (
                        f"throughput {shape} {who} {label.replace('_', ' ')}",
                        (
                            f"{fig['records_per_second']:,.0f} rec/s ({fig['seconds']:.2f} s, "
                            f"peak RSS {fig['peak_rss_mb']:.0f} MB)"
                        ),
                    )
                )
        for label in ("default", "no_validation"):
            ratio = out[shape][f"ratio_{label}"]
            table.append(
                (f"ratio {shape} userpilot/csv, {label.replace('_', ' ')}", f"{ratio:.2f}x")
            )
    return out


def _throughput_of(path: Path, n: int, repeats: int, scratch: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with serve(unlimited(), port=0) as emu:
        for label, validate in (("default", True), ("no_validation", False)):
            extra = {} if validate else {"validate_records": False}
            runs = [run_userpilot(emu, path, n, scratch, **extra) for _ in range(repeats)]
            out[f"userpilot_{label}"] = _run_figures(fastest(runs))
    for label, validate in (("default", True), ("no_validation", False)):
        runs = [run_csv(path, n, scratch, validate=validate) for _ in range(repeats)]
        out[f"csv_{label}"] = _run_figures(fastest(runs))
    for label in ("default", "no_validation"):
        ours = out[f"userpilot_{label}"]["records_per_second"]
        theirs = out[f"csv_{label}"]["records_per_second"]
        out[f"ratio_{label}"] = ours / theirs
    return out


def _run_figures(result: RunResult) -> dict[str, Any]:
    return {
        "seconds": round(result.seconds, 3),
        "records_per_second": round(result.records_per_second, 1),
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        # CPU time of the process (all threads): steadier than wall time on a busy machine.
        "cpu_seconds": round(result.cpu_seconds, 3),
        "rows_sent": result.rows_sent,
        "jobs": len(result.jobs),
    }


def measure_stages(sizes: Sizes, scratch: Path, _out_dir: Path, table: Table) -> dict[str, Any]:
    """Where a record's time goes: each stage alone over the same records, beside the whole run.

    In this process and in CPU time of this thread, so the rest of the machine's load counts
    less than in wall time; shares, not absolute figures, are the point.
    """
    n = sizes.stages
    out: dict[str, Any] = {"records": n}
    for label, shape, rerun in (
        ("flat", "flat", False),
        ("nested", "nested", False),
        ("unchanged_rerun", "flat", True),
    ):
        figures = _stage_times(shape, n, scratch, rerun=rerun)
        out[label] = figures
        parts = ", ".join(
            f"{stage} {share:.0%}" for stage, share in figures["shares"].items() if share >= 0.01
        )
        table.append(
            (
                f"stages {label.replace('_', ' ')}",
                f"{figures['records_per_cpu_second']:,.0f} rec/CPU-s: {parts}",
            )
        )
    return out


def _stage_times(shape: str, n: int, scratch: Path, *, rerun: bool) -> dict[str, Any]:
    """CPU seconds per stage over `n` users of `shape`, beside the whole record path (dry runs).

    Two targets of the same settings take the same records chunk by chunk, taking turns so
    that both meet the same load on the machine: one through its whole message path, the
    other one stage at a time. A chunk is small so that, as in a real run, a record is still
    in the CPU's caches from one stage to the next.
    """
    workdir = Path(tempfile.mkdtemp(prefix="stages-", dir=scratch))
    path = workdir / "input.singer"
    write_shape(path, shape, n)
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    with _quiet():
        whole, probe = _stage_targets(workdir, text, rerun=rerun)
        whole.process_lines(io.StringIO(lines[0]))
        reader = probe.message_reader
        probe._process_schema_message(reader.deserialize_json(lines[0]))  # noqa: SLF001
        sink = probe.get_sink("users")
        assert isinstance(sink, ProfileSink)  # noqa: S101 - the target's only sink class
        context = sink._get_context({})  # noqa: SLF001
        laps = _Laps()
        for start in range(1, len(lines), _STAGE_CHUNK):
            chunk = lines[start : start + _STAGE_CHUNK]
            whole_input = io.StringIO("".join(chunk))
            laps.lap("bench")
            whole.process_lines(whole_input)
            laps.lap("whole")
            messages = [reader.deserialize_json(line) for line in chunk]
            laps.lap("read JSON")
            records = [m["record"] for m in messages if m["type"] == "RECORD"]
            laps.lap("bench")
            for record in records:
                sink._validate_and_parse(record)  # noqa: SLF001
            laps.lap("validate, parse dates")
            for record in records:
                sink._singer_validate_message(record)  # noqa: SLF001
            laps.lap("key check")
            profiles = [to_profile(record, sink.mapping) for record in records]
            laps.lap("record to profile")
            for profile in profiles:
                if isinstance(profile, Profile):
                    profile.line(sink.kind)
            laps.lap("profile to line")
            for record in records:
                probe.pipeline.next_position()
                sink.process_record(record, context)
            laps.lap("handled")
        whole.process_endofpipe()
        probe.process_endofpipe()
    spent = laps.spent
    total = spent.pop("whole")
    spent.pop("bench")
    # `process_record` maps and encodes again: what it spends beyond that is the pipeline's.
    after = spent.pop("handled") - spent["record to profile"] - spent["profile to line"]
    spent["change lookup" if rerun else "batch files"] = after
    spent["message loop and glue"] = total - sum(spent.values())
    return {
        "records": n,
        "cpu_seconds": round(total, 3),
        "records_per_cpu_second": round(n / total, 1),
        "us_per_record": {k: round(v / n * 1e6, 2) for k, v in spent.items()},
        "shares": {k: round(v / total, 3) for k, v in spent.items()},
    }


def _stage_targets(
    workdir: Path, text: str, *, rerun: bool
) -> tuple[TargetUserpilot, TargetUserpilot]:
    """Two targets of the same settings for `_stage_times`, each with its own batch dirs.

    For a rerun, a fingerprint store is filled the way a first run does (through confirmed
    jobs) and each target gets its own copy: a store is open in one run at a time.
    """
    api_url = "http://127.0.0.1:9"
    store = workdir / "fingerprints.sqlite"
    if rerun:
        with serve(unlimited(), port=0) as emu:
            api_url = emu.url
            config = userpilot_config(
                emu, workdir, send_only_changes=True, fingerprint_store_path=str(store)
            )
            TargetUserpilot(config=config).listen(io.StringIO(text))

    def target(name: str) -> TargetUserpilot:
        (workdir / name).mkdir()
        config = {
            "api_key": TOKEN,
            "api_url": api_url,
            "batch_dir": str(workdir / name / "batches"),
            "dry_run": True,
            "dry_run_dir": str(workdir / name / "dry-run"),
        }
        if rerun:
            copy = workdir / name / store.name
            shutil.copyfile(store, copy)
            config |= {"send_only_changes": True, "fingerprint_store_path": str(copy)}
        return TargetUserpilot(config=config)

    return target("whole"), target("probe")


class _Laps:
    """CPU seconds of this thread, added up per stage between one `lap` and the next."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = collections.defaultdict(float)
        self._at = time.thread_time()

    def lap(self, stage: str) -> None:
        """The time since the previous lap was spent on `stage`."""
        now = time.thread_time()
        self.spent[stage] += now - self._at
        self._at = now


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No INFO lines nor STATE from targets run in this process (they would bury the table)."""
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


_POLLS = re.compile(r"Job \S+ completed: .*?, ([\d,]+) rows, .*?(\d+) polls")


def measure_slots(sizes: Sizes, scratch: Path, out_dir: Path, table: Table) -> dict[str, Any]:
    """How busy the single job slot stays while the emulator works at a fixed rate."""
    n = sizes.slots
    path = scratch / "slots.singer"
    write_input(path, plain_users(n))
    rpm = sizes.slot_rows_per_minute
    with (
        _gc_pauses() as pauses,
        serve(EmulatorConfig(token=TOKEN, rows_per_minute=rpm, queued_seconds=0), port=0) as emu,
    ):
        result = run_userpilot(emu, path, n, scratch, timeout=max(600.0, 3 * n / (rpm / 60)))
        requests = emu.requests
    jobs = sorted((j for j in result.jobs if not j.foreign), key=lambda j: j.submitted_at)
    if any(j.finished_at is None for j in jobs):
        msg = "a job had not finished when the target exited"
        raise RuntimeError(msg)
    ends = [float(j.finished_at or 0.0) for j in jobs]
    starts = [j.submitted_at for j in jobs]
    busy = sum(end - start for start, end in zip(starts, ends, strict=True))
    span = ends[-1] - starts[0]
    gaps = [nxt - end for end, nxt in zip(ends[:-1], starts[1:], strict=True)]
    polls = [int(m.group(2)) for m in _POLLS.finditer(result.stderr)]
    parts = _gap_parts(jobs, requests)
    idle = _target_idle(jobs, requests)
    figures: dict[str, Any] = {
        "records": n,
        "rows_per_minute": rpm,
        "jobs": len(jobs),
        "rows_per_job": [j.rows for j in jobs],
        "busy_seconds": round(busy, 3),
        "span_seconds": round(span, 3),
        "utilization": busy / span if span else 0.0,
        "max_gap_seconds": max(gaps, default=0.0),
        "mean_gap_seconds": sum(gaps) / len(gaps) if gaps else 0.0,
        "gaps_seconds": [round(g, 4) for g in gaps],
        "slot_idle_share": 1 - busy / span if span else 0.0,
        # The target's own part of each gap: from a job's end on the server to the moment the
        # next upload starts arriving (sending it and the server parsing it are not idle time
        # of the target's).
        "target_idle_seconds": [round(i, 4) for i in idle],
        "target_idle_max_seconds": max(idle, default=0.0),
        "target_idle_mean_seconds": sum(idle) / len(idle) if idle else 0.0,
        "target_idle_share": sum(idle) / span if span else 0.0,
        "polls_per_job": polls,
        # Each gap in four: job end -> first poll after it; that poll -> next upload starts
        # arriving; the body on the wire; the emulator parsing it until the job exists.
        "gap_parts_seconds": parts,
        # Garbage collections over 50 ms in this process, where the emulator parses uploads.
        "emulator_gc_pauses_seconds": pauses,
        # The same gaps beside jobs at Userpilot's documented floor rate (a full batch runs
        # 8.3 minutes there, 5 s here): what the slot's idle time costs in production.
        "utilization_at_1200_rows_per_minute": _utilization_at(1_200, jobs, gaps),
        "wall_seconds": round(result.seconds, 3),
    }
    draw_timeline(jobs, out_dir / "slot-timeline.png", rpm)
    table.append(
        (
            "slot utilization",
            (
                f"{figures['utilization']:.2%} over {len(jobs)} jobs "
                f"(busy {busy:.1f} s of {span:.1f} s)"
            ),
        )
    )
    table.append(
        (
            "target idle",
            (
                f"{figures['target_idle_share']:.2%} of the span; per gap max "
                f"{figures['target_idle_max_seconds']:.3f} s, mean "
                f"{figures['target_idle_mean_seconds']:.3f} s"
            ),
        )
    )
    table.append(
        (
            "  same gaps in prod",
            f"{figures['utilization_at_1200_rows_per_minute']:.3%} at 1,200 rows/min",
        )
    )
    table.append(
        (
            "slot gaps",
            f"max {figures['max_gap_seconds']:.3f} s, mean {figures['mean_gap_seconds']:.3f} s",
        )
    )
    if parts:
        means = {key: sum(p[key] for p in parts) / len(parts) for key in parts[0]}
        table.append(
            (
                "mean gap, in parts",
                (
                    f"notice {means['notice']:.3f} s + to next upload {means['to_upload']:.3f} s "
                    f"+ send {means['send']:.3f} s + server parse {means['server_parse']:.3f} s"
                ),
            )
        )
    if pauses:
        table.append(
            (
                "emulator GC pauses",
                f"{len(pauses)} over 50 ms, the longest {max(pauses):.3f} s (server side)",
            )
        )
    if polls:
        table.append(
            ("polls per job", f"{', '.join(map(str, polls))} (total {sum(polls)})"),
        )
    return figures


@contextlib.contextmanager
def _gc_pauses() -> Iterator[list[float]]:
    """Collects the seconds of this process's garbage collections that took over 50 ms."""
    slow: list[float] = []
    began = [0.0]

    def callback(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        elif (took := time.perf_counter() - began[0]) > 0.05:
            slow.append(round(took, 3))

    gc.callbacks.append(callback)
    try:
        yield slow
    finally:
        gc.callbacks.remove(callback)


def _utilization_at(rows_per_minute: float, jobs: list[JobRecord], gaps: list[float]) -> float:
    busy = sum(j.rows for j in jobs) / rows_per_minute * 60
    return busy / (busy + sum(gaps)) if busy else 0.0


def _target_idle(jobs: list[JobRecord], requests: list[RequestRecord]) -> list[float]:
    """Per gap: a job's end on the server to the next job's upload starting to arrive."""
    idle = []
    for job, nxt in itertools.pairwise(jobs):
        posts = [r.at for r in requests if r.method == "POST" and r.job_id == nxt.job_id]
        if posts:
            # An upload that began arriving before the end (the server waits for the body)
            # left the slot no idle time of the target's.
            idle.append(max(0.0, min(posts) - float(job.finished_at or job.submitted_at)))
    return idle


def _gap_parts(jobs: list[JobRecord], requests: list[RequestRecord]) -> list[dict[str, float]]:
    """Split each gap between jobs using the emulator's request log."""
    parts = []
    for job, nxt in itertools.pairwise(jobs):
        end = float(job.finished_at or job.submitted_at)
        polls = [r.at for r in requests if r.method == "GET" and r.job_id == job.job_id]
        posts = [r for r in requests if r.method == "POST" and r.job_id == nxt.job_id]
        noticed = min((at for at in polls if at >= end), default=None)
        if noticed is None or not posts:
            continue
        parts.append(
            {
                "notice": round(noticed - end, 4),
                "to_upload": round(posts[0].at - noticed, 4),
                # The body on the wire (our client), then the server reading its NDJSON.
                "send": round((posts[-1].received_at or posts[-1].at) - posts[0].at, 4),
                "server_parse": round(
                    nxt.submitted_at - (posts[-1].received_at or posts[-1].at), 4
                ),
            }
        )
    return parts


def draw_timeline(jobs: list[JobRecord], png: Path, rpm: float) -> None:
    """One bar per job on a time axis, so the gaps between jobs show."""
    import matplotlib as mpl  # noqa: PLC0415 - only this measurement needs it

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    origin = jobs[0].submitted_at if jobs else 0.0
    fig, ax = plt.subplots(figsize=(12, 3.2))
    for index, job in enumerate(jobs):
        start = job.submitted_at - origin
        width = float(job.finished_at or job.submitted_at) - job.submitted_at
        ax.broken_barh(
            [(start, width)], (0.1, 0.8), facecolors="tab:blue" if index % 2 else "tab:cyan"
        )
    for prev, nxt in itertools.pairwise(jobs):
        end = float(prev.finished_at or prev.submitted_at) - origin
        gap = nxt.submitted_at - origin - end
        ax.broken_barh([(end, gap)], (0.1, 0.8), facecolors="tab:red")
        if gap > 0.05:  # label only visible gaps
            ax.text(end + gap / 2, 0.95, f"{gap:.2f}s", ha="center", fontsize=6)
    ax.set_yticks([])
    ax.set_xlabel("seconds since the first submission")
    ax.set_title(f"Userpilot job slot: {len(jobs)} jobs at {rpm:,.0f} rows/min (gaps in red)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def measure_memory(sizes: Sizes, scratch: Path, _out_dir: Path, table: Table) -> dict[str, Any]:
    """Peak RSS of the target process at `sizes.memory` records."""
    n = sizes.memory
    path = scratch / "memory.singer"
    write_input(path, plain_users(n))
    with serve(unlimited(), port=0) as emu:
        result = run_userpilot(emu, path, n, scratch)
    path.unlink()
    figures = _run_figures(result) | {"records": n}
    table.append(
        (
            f"peak RSS at {n:,} records",
            f"{result.peak_rss_mb:.0f} MB ({result.records_per_second:,.0f} rec/s)",
        )
    )
    return figures


def paced() -> EmulatorConfig:
    """An emulator at `PACED_ROWS_PER_MINUTE`: slower than the target, as Userpilot is."""
    return EmulatorConfig(token=TOKEN, rows_per_minute=PACED_ROWS_PER_MINUTE)


def measure_tap(sizes: Sizes, scratch: Path, _out_dir: Path, table: Table) -> dict[str, Any]:
    """How long the tap is held: until the target has read its input in full."""
    n = sizes.tap
    path = scratch / "tap.singer"
    write_shape(path, "flat", n)
    figures: dict[str, Any] = {"records": n, "paced_rows_per_minute": PACED_ROWS_PER_MINUTE}
    for label, config in (("instant", unlimited()), ("paced", paced())):
        with serve(config, port=0) as emu:
            result = run_userpilot(emu, path, n, scratch)
        figures[label] = _run_figures(result) | {"held_seconds": round(result.held_seconds, 2)}
        table.append(
            (
                f"tap held, {n:,} users, {label} emulator",
                f"{result.held_seconds:.1f} s (run {result.seconds:.1f} s)",
            )
        )
    path.unlink()
    figures["held_over_instant"] = round(
        figures["paced"]["held_seconds"] - figures["instant"]["held_seconds"], 2
    )
    return figures


def measure_duplicates(sizes: Sizes, scratch: Path, _out_dir: Path, table: Table) -> dict[str, Any]:
    """Rows sent per record received when 20% of records update an id seen shortly before."""
    n = sizes.duplicates
    path = scratch / "duplicates.singer"
    write_input(path, duplicated_users(n, 0.2))
    figures: dict[str, Any] = {"records": n, "duplicate_share": 0.2, "window": 20_000}
    for label, config in (("instant", unlimited()), ("paced", paced())):
        with serve(config, port=0) as emu:
            result = run_userpilot(emu, path, n, scratch)
            distinct = len(emu.users)
        figures[label] = _run_figures(result) | {
            "distinct_ids": distinct,
            "sent_per_received": result.rows_sent / n,
            "sent_per_distinct": result.rows_sent / distinct,
        }
        table.append(
            (
                f"rows sent / records (20% dups), {label} emulator",
                (
                    f"{result.rows_sent / n:.3f} ({result.rows_sent:,} of {n:,}; "
                    f"{distinct:,} distinct ids)"
                ),
            )
        )
    path.unlink()
    return figures


def measure_states(sizes: Sizes, scratch: Path, _out_dir: Path, table: Table) -> dict[str, Any]:
    """Peak RSS with a 2 KB STATE (40 streams' bookmarks) after every record."""
    n = sizes.states
    path = scratch / "states.singer"
    write_input(path, plain_users(n), state_every=1, state_streams=40)
    with serve(unlimited(), port=0) as emu:
        result = run_userpilot(emu, path, n, scratch)
    path.unlink()
    table.append(
        (
            f"STATE after every record, {n:,} users",
            f"peak RSS {result.peak_rss_mb:.0f} MB ({result.records_per_second:,.0f} rec/s)",
        )
    )
    return _run_figures(result) | {"records": n}


def measure_changes(sizes: Sizes, scratch: Path, _out_dir: Path, table: Table) -> dict[str, Any]:
    """`send_only_changes`: a first run, the same input again, then 1% changed."""
    n = sizes.changes
    same = scratch / "changes-same.singer"
    changed = scratch / "changes-1pct.singer"
    write_input(same, plain_users(n))
    write_input(changed, changed_users(n, 0.01))
    store = Path(tempfile.mkdtemp(prefix="fingerprints-", dir=scratch)) / "fp.sqlite"
    settings: dict[str, Any] = {"send_only_changes": True, "fingerprint_store_path": str(store)}
    figures: dict[str, Any] = {"records": n}
    with serve(unlimited(), port=0) as emu:
        for label, path in (("first", same), ("same_again", same), ("one_percent", changed)):
            result = run_userpilot(emu, path, n, scratch, **settings)
            figures[label] = _run_figures(result)
            table.append(
                (
                    f"changes-only: {label.replace('_', ' ')}",
                    f"{result.rows_sent:,} rows sent, {result.seconds:.2f} s",
                )
            )
    return figures


@contextlib.contextmanager
def postgres_url() -> Iterator[str | None]:
    """A PostgreSQL URL whose tables land in a fresh schema, or None when there is no server.

    The server is the tests' (`TARGET_USERPILOT_TEST_PG_URL`) or one `.ci/postgres` starts here.
    """
    from sqlalchemy import create_engine, text  # noqa: PLC0415 - only this measurement
    from sqlalchemy.engine import make_url  # noqa: PLC0415
    from sqlalchemy.pool import NullPool  # noqa: PLC0415

    server = os.environ.get(PG_URL_ENV)
    started: Path | None = None
    if not server:
        # Its own folder: the server runs as another user, who cannot enter the scratch folder.
        started = Path(tempfile.mkdtemp(prefix="userpilot-bench-pg-"))
        script = str(ROOT / ".ci" / "postgres")
        done = subprocess.run(
            ["bash", script, "start", str(started)], capture_output=True, text=True, check=False
        )
        server = done.stdout.strip() if done.returncode == 0 else None
    try:
        if not server:
            yield None
            return
        schema = f"bench_{os.getpid()}"
        engine = create_engine(server, poolclass=NullPool)
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
            yield url.render_as_string(hide_password=False)
        finally:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()
    finally:
        if started is not None:
            script = str(ROOT / ".ci" / "postgres")
            subprocess.run(["bash", script, "stop", str(started)], capture_output=True, check=False)


def measure_stores(sizes: Sizes, scratch: Path, _out_dir: Path, table: Table) -> dict[str, Any]:
    """`rerun` with the fingerprints in PostgreSQL (`fingerprint_store_url`) instead of SQLite."""
    with postgres_url() as pg_url:
        if not pg_url:
            return {"skipped": f"no PostgreSQL: set {PG_URL_ENV} or install it"}
        store = {"fingerprint_store_url": pg_url}
        return _unchanged_rerun(sizes.stores, scratch, table, "PostgreSQL store", store)


def measure_large_reruns(
    sizes: Sizes, scratch: Path, _out_dir: Path, table: Table
) -> dict[str, Any]:
    """`rerun` at each of `sizes.large_reruns`, with SQLite, then with PostgreSQL."""
    figures: dict[str, Any] = {}
    for n in sizes.large_reruns:
        store = Path(tempfile.mkdtemp(prefix="fingerprints-", dir=scratch)) / "fp.sqlite"
        sqlite = {"fingerprint_store_path": str(store)}
        figures[f"sqlite_{n}"] = _unchanged_rerun(n, scratch, table, "SQLite store", sqlite)
        store.unlink()
    with postgres_url() as pg_url:
        for n in sizes.large_reruns:
            if pg_url:
                store_url = {"fingerprint_store_url": pg_url}
                figures[f"postgres_{n}"] = _unchanged_rerun(
                    n, scratch, table, "PostgreSQL store", store_url
                )
    return figures


def measure_rerun(sizes: Sizes, scratch: Path, _out_dir: Path, table: Table) -> dict[str, Any]:
    """`send_only_changes` on users all sent before: the speed and memory of finding nothing."""
    store = Path(tempfile.mkdtemp(prefix="fingerprints-", dir=scratch)) / "fp.sqlite"
    return _unchanged_rerun(
        sizes.rerun, scratch, table, "SQLite store", {"fingerprint_store_path": str(store)}
    )


def _unchanged_rerun(
    n: int, scratch: Path, table: Table, label: str, store: dict[str, str]
) -> dict[str, Any]:
    """A first run of `n` flat users, then the same input again: nothing to send."""
    path = scratch / "rerun.singer"
    write_shape(path, "flat", n)
    settings: dict[str, Any] = {"send_only_changes": True, **store}
    figures: dict[str, Any] = {"records": n}
    # The emulator keeps no profiles: at ten million it would need more memory than the target.
    with serve(dataclasses.replace(unlimited(), keep_profiles=False), port=0) as emu:
        figures["first"] = _run_figures(run_userpilot(emu, path, n, scratch, **settings))
        unchanged = run_userpilot(emu, path, n, scratch, **settings)
    path.unlink()
    figures["unchanged"] = _run_figures(unchanged)
    table.append(
        (
            f"unchanged rerun, {n:,} users, {label}",
            (
                f"{unchanged.records_per_second:,.0f} rec/s ({unchanged.seconds:.2f} s, "
                f"{unchanged.rows_sent:,} rows sent, peak RSS {unchanged.peak_rss_mb:.0f} MB)"
            ),
        )
    )
    return figures


def measure_waiting(sizes: Sizes, scratch: Path, _out_dir: Path, table: Table) -> dict[str, Any]:
    """Memory and CPU a row costs while its batch waits in the spool behind others."""
    n, per_batch = sizes.waiting, min(10_000, sizes.waiting)
    folder = Path(tempfile.mkdtemp(prefix="waiting-", dir=scratch))

    def batches() -> list[BatchFile]:
        full = []
        for start in range(0, n, per_batch):
            batch = BatchFile("users", folder, BatchLimits(max_rows=per_batch))
            for i in range(start, min(n, start + per_batch)):
                pid = f"user-{i}"
                batch.add(Profile(pid, None, {"v": i, "email": f"{pid}@example.com"}), i, "users")
            full.append(batch)
        return full

    def cpu_per_row(behind: int) -> float:
        spool, full = Spool(), batches()
        started = time.process_time()
        for batch in full:
            spool.put(batch)
            for i in range(batch.rows):  # each record read meanwhile looks its id up
                ("users", f"new-{i}") in spool  # noqa: B015 - the lookup is what is timed
            if len(spool) > behind:
                spool.take().seal().delete()
        while spool:
            spool.take().seal().delete()
        return (time.process_time() - started) / n * 1e6

    figures: dict[str, Any] = {"rows": n, "rows_per_batch": per_batch}
    figures["cpu_us_per_row_none_behind"] = round(cpu_per_row(0), 2)
    figures["cpu_us_per_row_all_behind"] = round(cpu_per_row(n), 2)
    gc.collect()
    tracemalloc.start()
    try:
        spool = Spool()
        for batch in batches():
            spool.put(batch)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    spool.discard()
    shutil.rmtree(folder)
    figures["bytes_per_waiting_row"] = round(held / n)
    table.append(
        (
            f"spool, {n:,} rows waiting",
            (
                f"{figures['bytes_per_waiting_row']} bytes a row held; CPU a row "
                f"{figures['cpu_us_per_row_all_behind']} us behind others, "
                f"{figures['cpu_us_per_row_none_behind']} us leaving at once"
            ),
        )
    )
    return figures


# --- goals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A figure the project set a bound for: where it is in the results, and the bound."""

    name: str
    path: tuple[str, ...]
    op: Literal[">=", "<="]
    bound: float
    fmt: str  # how the figure and the bound are written in the table


GOALS = (
    Goal("flat: x target-csv", ("throughput", "flat", "ratio_default"), ">=", 2.0, ".2f"),
    Goal("nested: x target-csv", ("throughput", "nested", "ratio_default"), ">=", 2.0, ".2f"),
    Goal("unchanged rerun: rec/s", ("rerun", "unchanged", "records_per_second"), ">=", 5e4, ",.0f"),
    Goal("unchanged rerun: peak RSS MB", ("rerun", "unchanged", "peak_rss_mb"), "<=", 150, ".0f"),
    Goal("target idle share of the span", ("slots", "target_idle_share"), "<=", 0.01, ".2%"),
    Goal("target's longest idle gap, s", ("slots", "target_idle_max_seconds"), "<=", 0.5, ".3f"),
    Goal("memory run: peak RSS MB", ("memory", "peak_rss_mb"), "<=", 150, ".0f"),
    Goal("tap held past an instant emulator, s", ("tap", "held_over_instant"), "<=", 5, ".1f"),
    Goal(
        "rows / record, 20% dups, paced",
        ("duplicates", "paced", "sent_per_received"),
        "<=",
        0.82,
        ".3f",
    ),
    Goal("STATE per record: peak RSS MB", ("states", "peak_rss_mb"), "<=", 150, ".0f"),
    *(
        Goal(
            f"unchanged rerun {n:,}, {store}: peak RSS MB",
            (key, f"{store}_{n}", "unchanged", "peak_rss_mb"),
            "<=",
            bound,
            ".0f",
        )
        for key in ("large_reruns",)
        for n, bound in ((3_000_000, 200), (10_000_000, 250))
        for store in ("sqlite", "postgres")
    ),
    Goal(
        "unchanged rerun 10,000,000, sqlite: rec/s",
        ("large_reruns", "sqlite_10000000", "unchanged", "records_per_second"),
        ">=",
        45_000,
        ",.0f",
    ),
    Goal(
        "events: share of track_requests_per_minute",
        ("events", "share_of_setting"),
        ">=",
        0.99,
        ".2%",
    ),
    Goal("events: answers 429 at the default pace", ("events", "answered_429"), "<=", 0, "d"),
)


EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string"},
        "user_id": {"type": "string"},
        "event_name": {"type": "string"},
        "amount": {"type": ["number", "null"]},
    },
}


def write_users_and_events(path: Path, users: int, events: int) -> None:
    """Users, with events spread evenly among them (of users not in this run: none waits)."""
    every = max(1, users // max(events, 1))
    sent = 0
    with path.open("w") as out:
        for stream, schema, key in (
            ("users", USER_SCHEMA, "user_id"),
            ("events", EVENT_SCHEMA, "event_id"),
        ):
            header = {"type": "SCHEMA", "stream": stream, "schema": schema, "key_properties": [key]}
            out.write(json.dumps(header) + "\n")
        for i in range(users):
            out.write(json.dumps({"type": "RECORD", "stream": "users", "record": user(i)}) + "\n")
            if events and i % every == 0 and sent < events:
                event = {
                    "event_id": f"e{sent}",
                    "user_id": f"known-{sent % 50}",
                    "event_name": "seat_added",
                    "amount": 1.5,
                }
                out.write(
                    json.dumps({"type": "RECORD", "stream": "events", "record": event}) + "\n"
                )
                sent += 1
        for rest in range(sent, events):
            event = {
                "event_id": f"e{rest}",
                "user_id": f"known-{rest % 50}",
                "event_name": "seat_added",
                "amount": 1.5,
            }
            out.write(json.dumps({"type": "RECORD", "stream": "events", "record": event}) + "\n")
        out.write(json.dumps({"type": "STATE", "value": {"offset": users + events}}) + "\n")


def _slot_utilization(jobs: list[JobRecord]) -> float:
    """Share of the span from the first upload to the last job's end that a job was running."""
    ours = sorted((j for j in jobs if not j.foreign), key=lambda j: j.submitted_at)
    busy = sum(float(j.finished_at or 0.0) - j.submitted_at for j in ours)
    span = float(ours[-1].finished_at or 0.0) - ours[0].submitted_at if ours else 0.0
    return busy / span if span else 0.0


def measure_events(sizes: Sizes, scratch: Path, _out_dir: Path, table: Table) -> dict[str, Any]:
    """Events a minute against the Track API's limit, and their effect on the bulk slot."""
    n, users = sizes.events, sizes.event_users
    seconds = n / 540 * 60
    # Users jobs that last about as long as the events: both run side by side throughout.
    rpm = users / (seconds / 60)
    config = EmulatorConfig(token=TOKEN, rows_per_minute=rpm, queued_seconds=0)
    both, alone = scratch / "events.singer", scratch / "events-users.singer"
    write_users_and_events(both, users, n)
    write_users_and_events(alone, users, 0)
    with serve(config, port=0) as emu:
        for k in range(50):
            requests_identify(emu, f"known-{k}")
        result = run_userpilot(emu, both, users + n, scratch, timeout=3 * seconds + 600)
        view = emu.events
    arrivals = sorted(
        dt.datetime.fromisoformat(e["received_at"].replace("Z", "+00:00")).timestamp()
        for e in view["events"]
    )
    per_minute = (
        (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) * 60 if len(arrivals) > 1 else 0.0
    )
    with serve(config, port=0) as emu:
        without = run_userpilot(emu, alone, users, scratch, timeout=3 * seconds + 600)
    figures: dict[str, Any] = {
        "events": n,
        "users": users,
        "rows_per_minute": round(rpm),
        "accepted": view["count"],
        "answered_429": view["answered_429"],
        "events_per_minute": round(per_minute, 1),
        "share_of_setting": per_minute / 540,
        "slot_utilization_with_events": _slot_utilization(result.jobs),
        "slot_utilization_without_events": _slot_utilization(without.jobs),
        "wall_seconds": round(result.seconds, 3),
        "wall_seconds_without_events": round(without.seconds, 3),
    }
    table.append(
        (
            "events",
            (
                f"{view['count']:,} accepted, {per_minute:,.1f}/min "
                f"({figures['share_of_setting']:.2%} of 540), {view['answered_429']} answered 429 "
                "(limit 600/min)"
            ),
        )
    )
    table.append(
        (
            "  bulk slot beside events",
            (
                f"{figures['slot_utilization_with_events']:.2%} busy with events, "
                f"{figures['slot_utilization_without_events']:.2%} without"
            ),
        )
    )
    return figures


def requests_identify(emu: Emulator, user_id: str) -> None:
    """One real-time identify: a user Userpilot knows before the run."""
    requests.post(
        f"{emu.url}/v1/identify",
        json={"user_id": user_id, "metadata": {}},
        headers={"Authorization": f"Token {TOKEN}", "X-API-Version": "2020-09-22"},
        timeout=10,
    ).raise_for_status()


def check_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal whose figure was measured in this run: its value and whether it was met."""
    checked = []
    for goal in GOALS:
        value: Any = results
        for key in goal.path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        met = value >= goal.bound if goal.op == ">=" else value <= goal.bound
        checked.append(
            {
                "goal": goal.name,
                "value": value,
                "figure": f"{value:{goal.fmt}}",
                "bound": f"{goal.op} {goal.bound:{goal.fmt}}",
                "met": met,
            }
        )
    return checked


# --- the run -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    cpu = platform.processor()
    try:
        info = Path("/proc/cpuinfo").read_text()
        match = re.search(r"model name\s*:\s*(.+)", info)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    try:
        mem_kib = int(re.findall(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[0])
    except (OSError, IndexError):
        mem_kib = 0
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "singer_sdk": _version("singer-sdk"),
        "target_csv": _version("meltanolabs-target-csv"),
    }


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def git_commit() -> dict[str, Any]:
    """The commit measured, and whether the work tree had changes."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def run(names: list[str], sizes: Sizes, out_dir: Path) -> dict[str, Any]:
    """Run the named measurements; write results.json; return the results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table: Table = []
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "sizes": sizes.__dict__,
        "machine": machine(),
        "git": git_commit(),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="userpilot-bench-") as tmp:
        scratch = Path(tmp)
        for name in names:
            # The emulator runs in this process: garbage an earlier measurement left (its
            # emulators' stores) must not be collected in the middle of this one.
            gc.collect()
            began = time.perf_counter()
            results[name] = MEASUREMENTS[name](sizes, scratch, out_dir, table)
            results[name]["bench_seconds"] = round(time.perf_counter() - began, 1)
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    results["goals"] = check_goals(results)
    for goal in results["goals"]:
        table.append(
            (
                f"goal: {goal['goal']}",
                f"{goal['figure']} ({goal['bound']}): {'met' if goal['met'] else 'MISSED'}",
            )
        )
    results["table"] = [{"measure": k, "value": v} for k, v in table]
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    width = max((len(k) for k, _ in table), default=0)
    print(
        f"target-userpilot benchmark ({results['machine']['cpus']} CPUs, "
        f"commit {str(results['git']['commit'])[:10]}{'+dirty' if results['git']['dirty'] else ''})"
    )
    for key, value in table:
        print(f"  {key:<{width}}  {value}")
    print(f"  {'benchmark time':<{width}}  {results['bench_seconds']:.0f} s; results in {out_dir}")
    return results


Measurement = Callable[[Sizes, Path, Path, Table], dict[str, Any]]
# Name -> measurement, in the order a full run takes them; each gets (sizes, scratch dir,
# output dir, table rows to append to) and returns its figures for results.json. A new
# measurement (e.g. the fingerprint store on PostgreSQL) is one function and one entry here.
MEASUREMENTS: dict[str, Measurement] = {
    "throughput": measure_throughput,
    "stages": measure_stages,
    "slots": measure_slots,
    "memory": measure_memory,
    "tap": measure_tap,
    "duplicates": measure_duplicates,
    "changes": measure_changes,
    "rerun": measure_rerun,
    "stores": measure_stores,
    "large_reruns": measure_large_reruns,
    "states": measure_states,
    "events": measure_events,
    "waiting": measure_waiting,
}
NAMES = tuple(MEASUREMENTS)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", choices=NAMES, action="append", help="run only this (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where results go")
    parser.add_argument(
        "--long", action="store_true", help="large_reruns at 10,000,000 users too (hours)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.long:
        sizes = dataclasses.replace(sizes, large_reruns=LONG_RERUNS)
    run(list(args.only or NAMES), sizes, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
