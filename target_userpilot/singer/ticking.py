"""Input lines that keep the main thread's clock running while the tap is silent.

Reading stdin line by line blocks for as long as the tap sends nothing, and with it every
duty of the main thread: applying job outcomes (STATE), the time-based checkpoint lag and
a termination signal. `lines` waits for input at most `TICK` seconds at a time and calls
`tick` in between, on the main thread.
"""

from __future__ import annotations

import os
import select
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

TICK = 0.25
CHUNK = 1 << 16


def lines(fd: int, tick: Callable[[], None], interval: float = TICK) -> Iterator[str]:
    """The text lines of file descriptor `fd` (UTF-8), with `tick()` every `interval` idle."""
    pieces: list[bytes] = []
    while True:
        ready, _, _ = select.select([fd], [], [], interval)
        if not ready:
            tick()
            continue
        chunk = os.read(fd, CHUNK)
        if not chunk:
            break
        end = chunk.rfind(b"\n")
        if end < 0:
            pieces.append(chunk)
            continue
        pieces.append(chunk[: end + 1])
        data = b"".join(pieces)
        pieces = [chunk[end + 1 :]] if end + 1 < len(chunk) else []
        for line in data[:-1].split(b"\n"):
            yield line.decode() + "\n"
        tick()
    rest = b"".join(pieces)
    if rest:
        yield rest.decode()  # input cut mid-line: the reader reports it
