"""Test helpers: Singer messages, and the real target CLI run as a subprocess (or in process)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from target_userpilot.emulator import Emulator

USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["string", "null"]},
        "company_id": {"type": ["integer", "null"]},
        "plan": {"type": ["string", "null"]},
        "seen_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
COMPANY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "name": {"type": ["string", "null"]}},
}


def schema(stream: str, body: dict[str, Any], key: str | None = "id") -> dict[str, Any]:
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": body,
        "key_properties": [key] if key else [],
    }


def record(stream: str, rec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "RECORD", "stream": stream, "record": rec}


def state(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "STATE", "value": value}


def user(i: int, company: int | None = None) -> dict[str, Any]:
    return {
        "id": i,
        "email": f"user{i}@example.com",
        "company_id": company,
        "plan": "pro" if i % 3 else "free",
        "seen_at": "2025-02-01T10:20:30Z",
    }


def interleaved(users: int, companies: int, state_every: int) -> Iterator[dict[str, Any]]:
    """Users and companies mixed evenly, a STATE every `state_every` records.

    Each STATE value says how many records came before it, so a test can check that every
    one of them is in Userpilot when the STATE comes out.
    """
    yield schema("users", USER_SCHEMA)
    yield schema("companies", COMPANY_SCHEMA)
    total = users + companies
    step = total / companies if companies else float("inf")
    u = c = 0
    for n in range(1, total + 1):
        if c < companies and n >= (c + 1) * step:
            c += 1
            yield record("companies", {"id": c, "name": f"Company {c}"})
        else:
            u += 1
            yield record("users", user(u, company=(u % max(companies, 1)) + 1))
        if n % state_every == 0:
            yield state({"bookmarks": {"records": n}})
    yield state({"bookmarks": {"records": total}})


def expected_ids(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(kind, id) of every record, in input order."""
    return [(m["stream"], str(m["record"]["id"])) for m in messages if m["type"] == "RECORD"]


@dataclass
class StateSeen:
    """A STATE line, with what the emulator held at the moment it was read."""

    value: dict[str, Any]
    users: set[str]
    companies: set[str]
    at: float


@dataclass
class Run:
    returncode: int
    states: list[StateSeen]
    stderr: str
    stdout_lines: list[str] = field(default_factory=list)


def run_target(
    config: dict[str, Any],
    messages: Iterable[dict[str, Any] | str],
    tmp_path: Path,
    *,
    emulator: Emulator | None = None,
    timeout: float = 300,
    on_state: Callable[[StateSeen, subprocess.Popen[bytes]], None] | None = None,
    env: dict[str, str] | None = None,
    max_file_bytes: int | None = None,
    flush_each: bool = False,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Run:
    """Run `python -m target_userpilot.target` with real pipes; snapshot the store per STATE.

    `max_file_bytes` caps the size of any file the target writes (RLIMIT_FSIZE): a write past
    it fails as a full disk would (Python ignores the SIGXFSZ that would otherwise kill it).
    `flush_each` sends each message at once, as a slow tap does (else writes are buffered).
    `on_start(proc)` runs in a thread of its own once the process is started (to signal it).
    """

    def limit_files() -> None:
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "target_userpilot.target", "--config", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, **(env or {})},
            preexec_fn=limit_files if max_file_bytes is not None else None,  # noqa: PLW1509 - no threads run in the child before exec
        )
        assert proc.stdin is not None
        assert proc.stdout is not None

        def feed() -> None:
            assert proc.stdin is not None
            try:
                for message in messages:
                    line = message if isinstance(message, str) else json.dumps(message)
                    proc.stdin.write(line.encode() + b"\n")
                    if flush_each:
                        proc.stdin.flush()
                proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass  # the target stopped reading (a failure the test checks)

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        if on_start is not None:
            threading.Thread(target=on_start, args=(proc,), daemon=True).start()
        states: list[StateSeen] = []
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        for raw in proc.stdout:
            line = raw.decode().rstrip("\n")
            lines.append(line)
            seen = StateSeen(
                value=json.loads(line),
                users=set(emulator.users) if emulator else set(),
                companies=set(emulator.companies) if emulator else set(),
                at=time.monotonic(),
            )
            states.append(seen)
            if on_state is not None:
                on_state(seen, proc)
            assert time.monotonic() < deadline, "target ran past the test's timeout"
        returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        writer.join(timeout=5)
    return Run(returncode, states, stderr_path.read_text(), lines)


class _StdoutTap(io.StringIO):
    """The target's stdout in process: each complete line is a STATE, with the store then."""

    def __init__(self, emulator: Emulator | None) -> None:
        super().__init__()
        self._emulator = emulator
        self._pending = ""
        self.states: list[StateSeen] = []
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self.lines.append(line)
            emulator = self._emulator
            self.states.append(
                StateSeen(
                    value=json.loads(line),
                    users=set(emulator.users) if emulator else set(),
                    companies=set(emulator.companies) if emulator else set(),
                    at=time.monotonic(),
                )
            )
        return super().write(text)


def run_in_process(
    config: dict[str, Any],
    messages: Iterable[dict[str, Any] | str],
    tmp_path: Path,
    *,
    emulator: Emulator | None = None,
) -> Run:
    """`run_target` without the child process (its ~1.7 s of imports): the same CLI entry point
    on the same input bytes, read from a real file descriptor as from a pipe, the console log
    captured as stderr (an escaping exception's traceback too), the exit status from SystemExit.
    For what a process adds (signals, exit codes set by the interpreter, limits, environment),
    use `run_target`.
    """
    from target_userpilot.target import TargetUserpilot  # noqa: PLC0415 - only these runs

    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    input_path = tmp_path / "input.jsonl"
    with input_path.open("wb") as out:
        for message in messages:
            line = message if isinstance(message, str) else json.dumps(message)
            out.write(line.encode() + b"\n")
    stdout = _StdoutTap(emulator)
    stderr = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    code = 0
    with (
        input_path.open("rb") as raw,
        io.TextIOWrapper(raw) as stdin,
        mock.patch("sys.stdin", stdin),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            # Built here, the SDK's console handler writes to this run's stderr.
            returned = TargetUserpilot.cli.main(
                ["--config", str(config_path)], standalone_mode=False
            )
            code = returned if isinstance(returned, int) else 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # noqa: BLE001 - what the interpreter prints, and exit status 1
            stderr.write(traceback.format_exc())
            code = 1
        finally:
            root.handlers, root.level = handlers, level
    return Run(code, stdout.states, stderr.getvalue(), stdout.lines)


def assert_states_trail_data(run: Run, messages: list[dict[str, Any]]) -> None:
    """Every STATE came out only when every record before it was in the emulator's store."""
    order = expected_ids(messages)
    for seen in run.states:
        before = order[: seen.value["bookmarks"]["records"]]
        missing = [
            (kind, pid)
            for kind, pid in before
            if pid not in (seen.users if kind == "users" else seen.companies)
        ]
        assert not missing, f"STATE {seen.value} came out before {len(missing)} records"


def run_cli(
    args: list[str], messages: Iterable[dict[str, Any]], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The target CLI on a few messages, with only `env` of the TARGET_USERPILOT_/MELTANO_ vars."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TARGET_USERPILOT_", "MELTANO_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "target_userpilot.target", *args],
        input="".join(json.dumps(message) + "\n" for message in messages),
        env={**inherited, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def dead_letters(path: Path, **loads: Any) -> list[dict[str, Any]]:
    """The letters of a dead-letter file, without each run's marker line (which has no `stream`)."""
    lines = [json.loads(raw, **loads) for raw in path.read_bytes().splitlines()]
    return [line for line in lines if "stream" in line]


def dry_run_output(dry_run_dir: Path) -> Path:
    """The folder the only dry run into `dry_run_dir` wrote (`<UTC time>-<pid>`)."""
    (run,) = (path for path in dry_run_dir.iterdir() if path.is_dir())
    return run
