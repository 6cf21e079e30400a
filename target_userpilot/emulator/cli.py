"""`userpilot-emulator`: run the Userpilot emulator in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING

from target_userpilot.emulator.config import (
    EXPORT_JOBS,
    FAULT_KINDS,
    JOB_ID_STYLES,
    PROFILES,
    PROGRESS_FIELDS,
    REFUSALS,
    EmulatorConfig,
)
from target_userpilot.emulator.inspect import PAGES, PREFIX
from target_userpilot.emulator.server import serve
from target_userpilot.loopback import is_loopback

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

_DEFAULTS = EmulatorConfig()


MAX_PORT = 65535


def _rate(text: str) -> float:
    value = float(text)
    if value < 0:
        msg = "must be >= 0 (0 or inf: unlimited)"
        raise argparse.ArgumentTypeError(msg)
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_PORT:
        msg = f"must be 0 to {MAX_PORT} (0 picks a free one)"
        raise argparse.ArgumentTypeError(msg)
    return value


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad or not kinds:
        msg = f"a comma-separated subset of {','.join(FAULT_KINDS)}"
        raise argparse.ArgumentTypeError(msg)
    return kinds


def build_parser() -> argparse.ArgumentParser:
    """The command line, every option documented."""
    p = argparse.ArgumentParser(
        prog="userpilot-emulator",
        description=(
            "A faithful local Userpilot bulk identify API (users and companies bulk_identify, "
            "background_jobs, the Deletion API) for tests and dry runs. Point target-userpilot "
            "at it with api_url http://127.0.0.1:PORT and api_key TOKEN. Read-only pages under "
            "/_emulator/ show the stored users, companies, jobs and deletions (same token). "
            "Logs one line per request and per job transition to stderr; Ctrl-C stops it."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    server = p.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only)")
    server.add_argument("--port", type=_port, default=8080, help="port to bind; 0 picks a free one")
    server.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (it is a test server: no TLS, one shared token)",
    )
    server.add_argument("--token", default="dev-token", help="API key accepted in 'Token <key>'")
    server.add_argument("--account", default=_DEFAULTS.account, help="account id in job ids/names")
    server.add_argument(
        "--quiet", action="store_true", help="log warnings only, not every request and job"
    )

    shapes = p.add_argument_group(
        "shapes (unset: the profile decides; see docs/emulator.md)",
    )
    shapes.add_argument(
        "--profile",
        choices=PROFILES,
        default=_DEFAULTS.profile,
        help="reference: Userpilot's API reference (202, bulk:jobs: ids, completed_rows, "
        "validating/pending_refresh, errors bodies, paged job list with an export job); "
        "legacy: the bulk pages' shapes",
    )
    jobs = p.add_argument_group("jobs")
    jobs.add_argument(
        "--rows-per-minute",
        type=_rate,
        default=_DEFAULTS.rows_per_minute,
        help="job processing rate; 0 or inf: a job completes once its queued delay is over",
    )
    jobs.add_argument(
        "--queued-seconds",
        type=float,
        default=_DEFAULTS.queued_seconds,
        help="how long a job stays 'queued' before 'processing'",
    )
    jobs.add_argument(
        "--job-id-style",
        choices=JOB_ID_STYLES,
        help="job ids: a UUID, bulk:jobs:<account>:<uuid>, or one of each in turn",
    )
    jobs.add_argument(
        "--progress-fields",
        choices=PROGRESS_FIELDS,
        help="job object: processed_count/error_count, or completed_rows/total_rows",
    )
    jobs.add_argument(
        "--submit-status",
        type=int,
        choices=(200, 202),
        help="status code of a successful submit",
    )
    jobs.add_argument("--validating-seconds", type=float, help="how long a job stays 'validating'")
    jobs.add_argument(
        "--pending-refresh-seconds",
        type=float,
        help="how long a processed job stays 'pending_refresh' (holding the slot)",
    )
    jobs.add_argument(
        "--job-list-page-size",
        type=int,
        help="jobs in the job list, newest first (0: every job, oldest first)",
    )
    jobs.add_argument(
        "--export-job",
        choices=EXPORT_JOBS,
        help="an export job in the job list: none, completed, or stuck in 'processing'",
    )

    rules = p.add_argument_group("rejection rules (a stricter server; all off by default)")
    rules.add_argument(
        "--max-value-chars",
        type=int,
        default=_DEFAULTS.max_value_chars,
        help="400 naming the line for a metadata string longer than this (0: no limit)",
    )
    rules.add_argument(
        "--refuse-uploads",
        action="store_true",
        help="400 naming the first line for every upload (a server refusing everything)",
    )
    rules.add_argument(
        "--string-values-only",
        action="store_true",
        help="400 naming the line for a metadata value that is not a string or null",
    )
    rules.add_argument(
        "--reject-key",
        action="append",
        default=[],
        metavar="KEY",
        help="400 naming the line for a metadata key; repeatable",
    )
    rules.add_argument(
        "--refuse-multipart",
        type=int,
        choices=REFUSALS,
        default=_DEFAULTS.refuse_multipart,
        help="refuse multipart uploads with 415 or 400 (a JSON-only server); 0: accept",
    )

    faults = p.add_argument_group("faults (all off by default)")
    faults.add_argument(
        "--seed", type=int, default=_DEFAULTS.seed, help="seed of the fault plan (reproducible)"
    )
    faults.add_argument(
        "--fail-rate",
        type=float,
        default=_DEFAULTS.fail_rate,
        help="share of requests (0..1) answered with a random fault from --fault-kinds, "
        "changing no state",
    )
    faults.add_argument(
        "--fault-kinds",
        type=_kinds,
        default=",".join(_DEFAULTS.fault_kinds),
        help="comma-separated faults to draw from: 500, 502, 503, 429 (with Retry-After), "
        "drop (connection closed, no response), 429date (Retry-After as an HTTP date); and for "
        "delete requests only, answers that are no acceptance: html200, empty200, 302",
    )
    faults.add_argument(
        "--retry-after-seconds",
        type=int,
        default=_DEFAULTS.retry_after_seconds,
        help="Retry-After sent with a 429",
    )
    faults.add_argument(
        "--retry-after-share",
        type=float,
        help="share of 429s that carry Retry-After (the profile decides when unset)",
    )
    faults.add_argument(
        "--slow-seconds",
        type=float,
        default=_DEFAULTS.slow_seconds,
        help="latency added before every response",
    )
    faults.add_argument(
        "--fail-jobs",
        type=int,
        default=_DEFAULTS.fail_jobs,
        help="the next N jobs end 'failed' and apply no rows",
    )
    faults.add_argument(
        "--drop-submit-responses",
        type=int,
        default=_DEFAULTS.drop_submit_responses,
        help="the next N successful submits create their job, then drop the connection "
        "(a lost response)",
    )
    faults.add_argument(
        "--reject-id",
        action="append",
        default=[],
        metavar="ID",
        help="a user_id/company_id rejected while processing (counted in error_count, "
        "reported in errors, not stored); repeatable",
    )
    faults.add_argument(
        "--foreign-job-seconds",
        type=float,
        default=_DEFAULTS.foreign_job_seconds,
        help="a job that is not ours holds the slot this long from start (submits get 409)",
    )
    rules.add_argument(
        "--proxy-body-limit",
        type=int,
        default=_DEFAULTS.proxy_body_limit,
        help="a proxy answers 413 (HTML) to any upload body over this many bytes (0: none)",
    )
    rules.add_argument(
        "--track-per-minute",
        type=int,
        default=_DEFAULTS.track_per_minute,
        help="Track API requests per token in any 60 s; more answer 429 (0: no limit)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGINT or SIGTERM; 0 on a clean stop, 1 when the server cannot start."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback(args.host):
        parser.error(f"--host {args.host} is not loopback; add --allow-remote if you mean it")
    try:
        config = EmulatorConfig(
            token=args.token,
            profile=args.profile,
            rows_per_minute=args.rows_per_minute,
            queued_seconds=args.queued_seconds,
            job_id_style=args.job_id_style,
            progress_fields=args.progress_fields,
            submit_status=args.submit_status,
            validating_seconds=args.validating_seconds,
            pending_refresh_seconds=args.pending_refresh_seconds,
            job_list_page_size=args.job_list_page_size,
            export_job=args.export_job,
            retry_after_share=args.retry_after_share,
            account=args.account,
            seed=args.seed,
            fail_rate=args.fail_rate,
            fault_kinds=args.fault_kinds,
            retry_after_seconds=args.retry_after_seconds,
            slow_seconds=args.slow_seconds,
            fail_jobs=args.fail_jobs,
            drop_submit_responses=args.drop_submit_responses,
            reject_ids=frozenset(args.reject_id),
            foreign_job_seconds=args.foreign_job_seconds,
            max_value_chars=args.max_value_chars,
            string_values_only=args.string_values_only,
            reject_keys=frozenset(args.reject_key),
            refuse_uploads=args.refuse_uploads,
            refuse_multipart=args.refuse_multipart,
            proxy_body_limit=args.proxy_body_limit,
            track_per_minute=args.track_per_minute,
        )
    except ValueError as e:
        parser.error(str(e))

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("target_userpilot.emulator")
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    try:
        with serve(config, args.host, args.port, allow_remote=args.allow_remote) as emu:
            log.warning("Userpilot emulator listening on %s (Ctrl-C to stop)", emu.url)
            log.warning(
                "Inspect it (token required): %s",
                ", ".join(f"{emu.url}{path}" for path in (PREFIX + "/", *PAGES)),
            )
            sys.stdout.write(f"{emu.url}\n")
            sys.stdout.flush()
            while not stop.wait(0.2):
                emu.tick()  # job transitions are logged when they happen
    except KeyboardInterrupt:
        pass
    except OSError as e:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, e)  # noqa: TRY400
        return 1
    log.warning("Userpilot emulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
