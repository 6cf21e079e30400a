"""Shared fixtures: a running Userpilot emulator per test, in the profile under test."""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from emulated import emulator_config
from fake_clock import FakeClock
from wire_script import Script, scripted_server

from target_userpilot.emulator import Emulator, serve


@pytest.fixture(autouse=True)
def _signal_handlers_restored() -> Iterator[None]:
    """Every target built in process installs SIGTERM/SIGINT handlers that only set its flag
    (and its CLI leaves them ignored): without this, Ctrl-C no longer stops the test process or
    an xdist worker once one test has built a target."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """An emulator with token "test-token", unlimited processing rate and no faults."""
    with serve(emulator_config(rows_per_minute=float("inf")), port=0) as emu:
        yield emu


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Emulator]]:
    """Start emulators with `EmulatorConfig` keyword arguments; all stop at the end of the test."""
    with contextlib.ExitStack() as stack:

        def make(**kwargs: Any) -> Emulator:
            return stack.enter_context(serve(emulator_config(**kwargs), port=0))

        yield make


@pytest.fixture
def scripted() -> Iterator[Script]:
    """A scripted local server: each request gets the first matching reply."""
    with scripted_server() as script:
        yield script


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock standing at noon UTC that moves only when advanced or slept on."""
    return FakeClock(dt.datetime(2026, 3, 4, 12, 0, tzinfo=dt.timezone.utc))


@pytest.fixture
def clocked_emulator(fake_clock: FakeClock) -> Iterator[Emulator]:
    """Like `emulator`, on `fake_clock`: jobs, the delete rate limit and 02:00 UTC follow it."""
    # Jobs finish at once: these tests are about deletions, not job phases.
    config = emulator_config(
        rows_per_minute=float("inf"), validating_seconds=0.0, pending_refresh_seconds=0.0
    )
    with serve(config, port=0, clock=fake_clock) as emu:
        yield emu
