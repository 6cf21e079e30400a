"""Shared fixtures: a running Userpilot emulator per test, in the profile under test."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from emulated import emulator_config
from wire_script import Script, scripted_server

from target_userpilot.emulator import Emulator, serve


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
