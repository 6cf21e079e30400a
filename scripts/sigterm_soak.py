"""SIGTERM at many random moments through the real CLI, over a large fingerprint store.

Fills a fingerprint store with N users (one full run), then runs the same input again with
`send_only_changes` and sends SIGTERM at a random moment of each run (some runs get two), from
the first fingerprint lookups on. Each run must exit within `termination_grace` + 5 s with exit
status 143, print the summary, and leave nothing in `batch_dir`.

    uv run python scripts/sigterm_soak.py [--runs 50] [--users 400000] [--seed 1] [--double 0.2]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from target_userpilot.emulator import EmulatorConfig, serve

TOKEN = "soak-token"  # noqa: S105 - the emulator's
GRACE = 5.0


def write_input(path: Path, users: int) -> None:
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "email": {"type": "string"}},
    }
    with path.open("w") as out:
        out.write(
            json.dumps(
                {"type": "SCHEMA", "stream": "users", "schema": schema, "key_properties": ["id"]}
            )
            + "\n"
        )
        for i in range(1, users + 1):
            rec = {"id": i, "email": f"user{i}@example.com"}
            out.write(json.dumps({"type": "RECORD", "stream": "users", "record": rec}) + "\n")
            if i % 10_000 == 0:
                out.write(json.dumps({"type": "STATE", "value": {"n": i}}) + "\n")


def run(config: Path, data: Path, log: Path, signals: list[float]) -> tuple[int, float]:
    """Run the CLI on `data`; send SIGTERM at each offset (s from the first stream line)."""
    with data.open("rb") as stdin, log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "target_userpilot.target", "--config", str(config)],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        deadline = time.monotonic() + 60
        while "loads as" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.monotonic()
        first = None
        for offset in signals:
            time.sleep(max(0.0, start + offset - time.monotonic()))
            proc.send_signal(signal.SIGTERM)
            first = first or time.monotonic()
        code = proc.wait(timeout=None if not signals else GRACE + 60)
    return code, time.monotonic() - (first or start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--users", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--double", type=float, default=0.2, help="share of runs signalled twice")
    args = parser.parse_args()
    rng = random.Random(args.seed)  # noqa: S311 - test moments, not secrets
    work = Path(tempfile.mkdtemp(prefix="sigterm-soak-"))
    data = work / "input.ndjson"
    write_input(data, args.users)
    with serve(EmulatorConfig(token=TOKEN, rows_per_minute=600_000), port=0) as emu:
        config = work / "config.json"
        config.write_text(
            json.dumps(
                {
                    "api_key": TOKEN,
                    "api_url": emu.url,
                    "batch_dir": str(work / "batches"),
                    "dead_letter_path": str(work / "dead.ndjson"),
                    "send_only_changes": True,
                    "fingerprint_store_path": str(work / "fingerprints.sqlite"),
                    "termination_grace": GRACE,
                }
            )
        )
        started = time.monotonic()
        code, _ = run(config, data, work / "fill.log", [])
        print(
            f"filled the store with {args.users:,} users: exit {code}, "
            f"{time.monotonic() - started:.1f} s"
        )
        failures = 0
        worst = 0.0
        for n in range(args.runs):
            first = rng.uniform(0, 3.0)
            offsets = (
                [first] if rng.random() >= args.double else [first, first + rng.uniform(0.1, 1)]
            )
            log = work / f"run-{n}.log"
            code, seconds = run(config, data, log, offsets)
            text = log.read_text()
            left = list((work / "batches").rglob("*"))
            ok = code == 143 and "Summary:" in text and not left and seconds < GRACE + 5
            worst = max(worst, seconds)
            failures += not ok
            print(
                f"run {n:2}: SIGTERM x{len(offsets)} at {first:.2f} s -> exit {code} in "
                f"{seconds:.2f} s, summary {'yes' if 'Summary:' in text else 'NO'}, "
                f"{len(left)} files left{'' if ok else '  <-- FAILED'}"
            )
    print(
        f"{args.runs - failures}/{args.runs} runs as required; slowest exit {worst:.2f} s "
        f"(limit {GRACE + 5:.0f} s)"
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
