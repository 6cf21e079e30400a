"""A faithful local Userpilot: the bulk identify API on loopback, for tests, demos and benchmarks.

from target_userpilot.emulator import EmulatorConfig, serve

with serve(EmulatorConfig(token="test-token"), port=0) as emu:
    ...  # point the target at emu.url; inspect emu.users, emu.jobs, emu.requests
"""

try:
    import werkzeug  # noqa: F401 - only to name the missing extra
except ImportError as exc:  # a production install: the target never needs the emulator
    msg = "the emulator needs the `emulator` extra: pip install 'target-userpilot[emulator]'"
    raise ImportError(msg) from exc

from target_userpilot.emulator.config import MAX_FILE_BYTES, MAX_RECORDS, EmulatorConfig
from target_userpilot.emulator.server import Emulator, serve
from target_userpilot.emulator.store import JobRecord, RequestRecord

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_RECORDS",
    "Emulator",
    "EmulatorConfig",
    "JobRecord",
    "RequestRecord",
    "serve",
]
