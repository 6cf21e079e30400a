"""Shared fixtures: a running Userpilot emulator per test."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_clock import FakeClock

from target_userpilot.emulator import Emulator, EmulatorConfig, serve

EMULATOR_TOKEN = "test-token"  # noqa: S105 - the emulator's


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """An emulator with token "test-token", unlimited processing rate and no faults."""
    config = EmulatorConfig(token=EMULATOR_TOKEN, rows_per_minute=float("inf"))
    with serve(config, port=0) as emu:
        yield emu


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Emulator]]:
    """Start emulators with `EmulatorConfig` keyword arguments; all stop at the end of the test."""
    with contextlib.ExitStack() as stack:

        def make(**kwargs: Any) -> Emulator:
            kwargs.setdefault("token", EMULATOR_TOKEN)
            return stack.enter_context(serve(EmulatorConfig(**kwargs), port=0))

        yield make


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock standing at noon UTC that moves only when advanced or slept on."""
    return FakeClock(dt.datetime(2026, 3, 4, 12, 0, tzinfo=dt.timezone.utc))


@pytest.fixture
def clocked_emulator(fake_clock: FakeClock) -> Iterator[Emulator]:
    """Like `emulator`, on `fake_clock`: jobs, the delete rate limit and 02:00 UTC follow it."""
    config = EmulatorConfig(token=EMULATOR_TOKEN, rows_per_minute=float("inf"))
    with serve(config, port=0, clock=fake_clock) as emu:
        yield emu
