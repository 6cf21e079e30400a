"""A sample sync in seconds: the real target CLI, the bundled emulator, bundled sample data.

`target-userpilot-demo` starts the emulator on a free loopback port, pipes the sample Singer
messages into `target-userpilot` as a tap would, and prints the STATE lines the target
released and what arrived in the (emulated) Userpilot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from target_userpilot.emulator import EmulatorConfig, serve

SAMPLE = "sample.singer.jsonl"
TOKEN = "demo-token"  # noqa: S105 - the emulator's own throwaway token


def run(input_path: Path, *, batch_rows: int, rows_per_minute: float) -> int:
    """Sync `input_path` to a fresh emulator; returns the target's exit status."""
    with serve(EmulatorConfig(token=TOKEN, rows_per_minute=rows_per_minute), port=0) as emu:
        print(f"Userpilot emulator listening at {emu.url}", flush=True)
        with tempfile.TemporaryDirectory(prefix="userpilot-demo-") as tmp:
            config = Path(tmp) / "config.json"
            dead_letters = Path(tmp) / "dead-letters.ndjson"
            config.write_text(
                json.dumps(
                    {
                        "api_key": TOKEN,
                        "api_url": emu.url,
                        "max_batch_rows": batch_rows,
                        # Small, so the sparse companies batch goes out early and STATE
                        # checkpoints show along the way.
                        "max_checkpoint_lag_records": batch_rows,
                        "dead_letter_path": str(dead_letters),
                        "batch_dir": tmp,
                    },
                ),
            )
            print(f"Running target-userpilot on {input_path} ...", flush=True)
            with input_path.open("rb") as stdin:
                proc = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
                    [sys.executable, "-m", "target_userpilot.target", "--config", str(config)],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    check=False,
                )
            states = proc.stdout.decode().splitlines()
            print(f"\nSTATE lines released by the target ({len(states)}):")
            for line in states:
                print(f"  {line}")
            users, companies = emu.users, emu.companies
            print(
                f"\nArrived in Userpilot: {len(users)} users, {len(companies)} companies "
                f"in {len(emu.jobs)} jobs."
            )
            for profile in list(users.values())[:3] + list(companies.values())[:2]:
                print(f"  {json.dumps(profile)}")
            if dead_letters.exists():
                # The run's marker line (no `stream`) is not a letter.
                lines = dead_letters.read_text().splitlines()
                letters = [line for line in lines if "stream" in json.loads(line)]
                print(f"\nDead letters ({len(letters)}):")
                for line in letters:
                    print(f"  {line}")
            return proc.returncode


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--input",
        type=Path,
        help="Singer messages to send (default: the bundled sample of users and companies).",
    )
    parser.add_argument(
        "--batch-rows", type=int, default=25, help="max_batch_rows, small to show several jobs."
    )
    parser.add_argument(
        "--rows-per-minute",
        type=float,
        default=60_000,
        help="Emulated processing rate (Userpilot's own is about 1,200).",
    )
    args = parser.parse_args(argv)
    if args.input is not None:
        return run(args.input, batch_rows=args.batch_rows, rows_per_minute=args.rows_per_minute)
    with resources.as_file(
        resources.files("target_userpilot.emulator.sample_data") / SAMPLE
    ) as path:
        return run(path, batch_rows=args.batch_rows, rows_per_minute=args.rows_per_minute)


if __name__ == "__main__":
    sys.exit(main())
