"""Console commands of the `emulator` extra: without it, one line naming the extra.

The commands' own modules import the emulator package, which raises that line as an
ImportError; a console script would print it inside a traceback.
"""

from __future__ import annotations

import sys


def emulator() -> int:
    """`userpilot-emulator`."""
    try:
        from target_userpilot.emulator.cli import main  # noqa: PLC0415 - needs the extra
    except ImportError as exc:
        return _missing("userpilot-emulator", exc)
    return main()


def demo() -> int:
    """`target-userpilot-demo`."""
    try:
        from target_userpilot.emulator.demo import main  # noqa: PLC0415 - needs the extra
    except ImportError as exc:
        return _missing("target-userpilot-demo", exc)
    return main()


def _missing(command: str, exc: ImportError) -> int:
    sys.stderr.write(f"{command}: {exc}\n")
    return 1
