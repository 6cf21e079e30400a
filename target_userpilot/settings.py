"""The target's settings: the JSON schema users configure, and the typed view the code reads.

The schema is built with the SDK's typing helpers so `--about` (text, json, markdown), Meltano
and config validation all describe the same settings; defaults live here once.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from singer_sdk import typing as th

from target_userpilot.errors import UserFacingError
from target_userpilot.fingerprints.store_url import check_store_url
from target_userpilot.places import default_path
from target_userpilot.run.batches import MAX_API_BYTES, MAX_API_ROWS, MULTIPART_MARGIN, BatchLimits
from target_userpilot.run.deletions import DEFAULT_MAX_DELETES, SHARE_FLOOR, DeleteLimit

if TYPE_CHECKING:
    from collections.abc import Mapping

    from target_userpilot.kinds import Kind

DEFAULT_API_URL = "https://analytex.userpilot.io"
KINDS: tuple[Kind, ...] = ("users", "companies")
EVENTS = "events"  # the third kind: each record is one Track API request
DEFAULT_TRACK_PER_MINUTE = 540  # a tenth below Userpilot's 600, shared with real-time identify
# Outside a Meltano project, in the working folder (inside one: `.meltano/target-userpilot/`).
DEAD_LETTERS_OUTSIDE_MELTANO = "userpilot-dead-letters.ndjson"
DRY_RUN_OUTSIDE_MELTANO = "userpilot-dry-run"
# No integer setting comes near this many digits; a bigger "whole number" is refused before
# `int()` builds it (`1e999999999` would take gigabytes).
MAX_WHOLE_DIGITS = 18
# Full batches that may wait on disk for the job slot before reading pauses: some ten million
# 200-byte profiles, the first sync of most sources, on a disk or a tmpfs /tmp of a few GB.
DEFAULT_MAX_SPOOL_BYTES = 2_000_000_000


class SettingsError(UserFacingError):
    """A setting, or a stream no setting routes, the run cannot use; the message names it."""


CONFIG_SCHEMA = th.PropertiesList(
    th.Property(
        "api_key",
        th.StringType,
        required=True,
        secret=True,
        title="API key",
        description="Userpilot API key (Settings > Environment). Sent as `Authorization: Token`; "
        "never logged.",
    ),
    th.Property(
        "api_url",
        th.StringType,
        default=DEFAULT_API_URL,
        title="API URL",
        description="Base URL of your Userpilot environment: `https://analytex.userpilot.io` (US), "
        "`https://analytex-eu.userpilot.io` (EU), or your environment's own host. HTTPS only "
        "(plain HTTP is accepted for loopback addresses, e.g. the bundled emulator).",
    ),
    th.Property(
        "stream_kinds",
        th.ObjectType(additional_properties=th.StringType),
        default={},
        title="Stream kinds",
        description='Maps stream names to `users`, `companies` or `events`, e.g. `{"contacts": '
        '"users", "accounts": "companies", "product_events": "events"}`. Streams named `users`, '
        "`companies` and `events` need no entry.",
    ),
    th.Property(
        "default_kind",
        th.StringType(allowed_values=["users", "companies"]),
        title="Default kind",
        description="Kind for streams not named in `stream_kinds` (unset: such a stream is an "
        "error).",
    ),
    th.Property(
        "user_id_property",
        th.StringType,
        title="User id property",
        description="Record property holding the user id. Default: the stream's single key "
        "property as the tap declares it, else `user_id` if the stream has it, else `id`.",
    ),
    th.Property(
        "company_id_property",
        th.StringType,
        title="Company id property",
        description="Record property holding the company id of a company record. Default: the "
        "stream's single key property as the tap declares it, else `company_id` if the stream "
        "has it, else `id`.",
    ),
    th.Property(
        "user_company_property",
        th.StringType,
        default="company_id",
        title="User's company property",
        description="Property of a user record naming the user's company. A user whose value "
        "is null, missing or empty is sent without a company (Userpilot keeps the one it has).",
    ),
    th.Property(
        "include_properties",
        th.ArrayType(th.StringType),
        title="Include properties",
        description="If set, only these top-level properties become metadata.",
    ),
    th.Property(
        "exclude_properties",
        th.ArrayType(th.StringType),
        default=[],
        title="Exclude properties",
        description="Top-level properties never sent as metadata.",
    ),
    th.Property(
        "metadata_separator",
        th.StringType,
        default="__",
        title="Metadata separator",
        description='Joins nested keys when flattening objects: `{"a": {"b": 1}}` -> `a__b`.',
    ),
    th.Property(
        "arrays",
        th.StringType(allowed_values=["json", "drop"]),
        default="json",
        title="Arrays",
        description="`json`: send arrays as JSON strings; `drop`: leave them out.",
    ),
    th.Property(
        "nulls",
        th.StringType(allowed_values=["send", "drop"]),
        default="send",
        title="Nulls",
        description="`send`: null values are sent (they clear the attribute); `drop`: left out.",
    ),
    th.Property(
        "event_user_property",
        th.StringType,
        default="user_id",
        title="Event user property",
        description="Property of an `events` record holding the id of the user who did it.",
    ),
    th.Property(
        "event_names",
        th.ObjectType(additional_properties=th.StringType),
        default={},
        title="Event names",
        description='A fixed event name per `events` stream, e.g. `{"invoices": "invoice_paid"}`; '
        "it wins over `event_name_property`.",
    ),
    th.Property(
        "event_name_property",
        th.StringType,
        default="event_name",
        title="Event name property",
        description="Property of an `events` record holding the event name (streams not named "
        "in `event_names`).",
    ),
    th.Property(
        "track_requests_per_minute",
        th.IntegerType(minimum=1, maximum=600),
        default=DEFAULT_TRACK_PER_MINUTE,
        title="Track requests per minute",
        description="Events sent a minute, evenly spaced, beside the bulk jobs. Userpilot allows "
        "600 a minute per API key, shared with its real-time identify calls.",
    ),
    th.Property(
        "on_invalid_record",
        th.StringType(allowed_values=["dead_letter", "fail", "skip"]),
        default="dead_letter",
        title="On invalid record",
        description="What to do with a record that cannot become a profile (or that Userpilot "
        "rejects): `dead_letter` writes it to the dead-letter file and goes on, `fail` stops the "
        "run, `skip` counts it and goes on.",
    ),
    th.Property(
        "dead_letter_path",
        th.StringType,
        title="Dead-letter file",
        description="NDJSON file that invalid and rejected records are appended to (default: "
        "`.meltano/target-userpilot/dead-letters.ndjson` in a Meltano project, else "
        f"`{DEAD_LETTERS_OUTSIDE_MELTANO}` in the working folder).",
    ),
    th.Property(
        "max_invalid_percent",
        # A whole percent, not a 0-1 share: Meltano has no number kind that survives env vars.
        th.IntegerType(minimum=0, maximum=100),
        default=50,
        title="Max invalid percent",
        description="Percent of a stream's records in one run that may be invalid before the "
        "run stops (exit 1, no STATE past the first invalid record of that stream). Judged "
        "once the stream has 100 records; at the end of input a stream whose every record "
        "was invalid stops the run too. 100 turns the check off.",
    ),
    th.Property(
        "dry_run",
        th.BooleanType,
        default=False,
        title="Dry run",
        description="Map and validate everything and write the batch files to `dry_run_dir`; "
        "upload nothing and emit no STATE.",
    ),
    th.Property(
        "dry_run_dir",
        th.StringType,
        title="Dry-run folder",
        description="Where a dry run writes the NDJSON files it would have uploaded, each run in "
        "a new folder `<UTC time>-<pid>` (default: `.meltano/target-userpilot/dry-run` in a "
        f"Meltano project, else `{DRY_RUN_OUTSIDE_MELTANO}` in the working folder).",
    ),
    th.Property(
        "max_batch_rows",
        th.IntegerType(minimum=1, maximum=MAX_API_ROWS),
        default=MAX_API_ROWS,
        title="Max batch rows",
        description="Profiles per upload (Userpilot's limit is 10,000).",
    ),
    th.Property(
        "max_batch_bytes",
        th.IntegerType(minimum=1024, maximum=MAX_API_BYTES - MULTIPART_MARGIN),
        default=MAX_API_BYTES - MULTIPART_MARGIN,
        title="Max batch bytes",
        description="Bytes per upload file; Userpilot's limit is 50 MB (50,000,000 bytes), and "
        "the default leaves 64 KiB for the multipart envelope or the JSON body's wrapper.",
    ),
    th.Property(
        "batch_dir",
        th.StringType,
        title="Batch folder",
        description="Folder for batch files while they wait for upload (default: the system "
        "temporary folder). Files are removed once their job is confirmed.",
    ),
    th.Property(
        "max_spool_bytes",
        th.IntegerType(minimum=0),
        default=DEFAULT_MAX_SPOOL_BYTES,
        title="Max spool bytes",
        description="Bytes of full batches that may wait in `batch_dir` for Userpilot's job slot "
        "while the target reads on; past this, reading pauses (holding the tap) until jobs "
        "complete. Waiting batches are removed if the run stops; the rerun resumes from the last "
        "STATE.",
    ),
    th.Property(
        "max_checkpoint_lag_records",
        th.IntegerType(minimum=1),
        default=20_000,
        title="Max checkpoint lag (records)",
        description="A half-full batch that has held back the newest STATE for this many records "
        "is uploaded early, so a resume never repeats much.",
    ),
    th.Property(
        "max_checkpoint_lag_minutes",
        th.IntegerType(minimum=0),
        default=30,
        title="Max checkpoint lag (minutes)",
        description="Likewise, in minutes since the batch's first record.",
    ),
    th.Property(
        "job_timeout",
        th.IntegerType(minimum=1),
        default=3600,
        title="Job timeout (s)",
        description="Longest wait for one Userpilot job before the run fails (10,000 rows take "
        "5 to 9 minutes at Userpilot's documented rate).",
    ),
    th.Property(
        "job_retries",
        th.IntegerType(minimum=0),
        default=2,
        title="Job retries",
        description="Times a job that ends `failed` is resubmitted before the run fails.",
    ),
    th.Property(
        "poll_max_interval",
        th.IntegerType(minimum=1),
        default=30,
        title="Max poll interval (s)",
        description="Longest pause between two polls of a running job.",
    ),
    th.Property(
        "slot_wait_timeout",
        th.IntegerType(minimum=0),
        default=3600,
        title="Slot wait timeout (s)",
        description="Longest wait for another import (HTTP 409) to free Userpilot's job slot.",
    ),
    th.Property(
        "request_retry_max_time",
        th.IntegerType(minimum=0),
        default=600,
        title="Request retry time (s)",
        description="How long one request is retried on connection errors, 429 and 5xx.",
    ),
    th.Property(
        "request_timeout",
        th.IntegerType(minimum=1),
        default=300,
        title="Request timeout (s)",
        description="Read timeout of one HTTP request (an upload of 50 MB included).",
    ),
    th.Property(
        "upload_format",
        th.StringType(allowed_values=["multipart", "json"]),
        default="multipart",
        title="Upload format",
        description="How a batch is uploaded: `multipart` (an NDJSON file, Userpilot's bulk "
        'pages) or `json` (a `{"users": [...]}` body, its API reference). With `multipart`, an '
        "upload refused with HTTP 415 (or a 400 saying there is no file) switches the run to "
        "`json`.",
    ),
    th.Property(
        "termination_grace",
        th.IntegerType(minimum=0),
        default=60,
        title="Termination grace (s)",
        description="On SIGTERM/SIGINT, how long to wait for the job in flight before exiting.",
    ),
    th.Property(
        "send_only_changes",
        th.BooleanType,
        default=False,
        title="Send only changes",
        description="Keep a fingerprint of every profile a completed job confirmed (a local "
        "SQLite file) and skip profiles that have not changed since.",
    ),
    th.Property(
        "fingerprint_store_path",
        th.StringType,
        title="Fingerprint store",
        description="SQLite file for `send_only_changes` (default: `.meltano/target-userpilot/` "
        "in a Meltano project, else the user data folder).",
    ),
    th.Property(
        "fingerprint_store_url",
        th.StringType,
        secret=True,
        title="Fingerprint store URL",
        description="With `send_only_changes`: keep the fingerprints in this database instead of "
        "the SQLite file, for runners that start with an empty disk. A SQLAlchemy URL, e.g. "
        "`postgresql+psycopg://user:password@host:5432/db`; never logged.",
    ),
    th.Property(
        "resend_all",
        th.BooleanType,
        default=False,
        title="Resend all",
        description="With `send_only_changes`: forget the fingerprints and send every profile.",
    ),
    th.Property(
        "resend_after_days",
        th.IntegerType(minimum=0),
        title="Resend after (days)",
        description="With `send_only_changes`: resend unchanged profiles last confirmed this many "
        "days ago, so edits made in Userpilot are eventually overwritten.",
    ),
    # The SDK's own `hard_delete` setting (its `TARGET_HARD_DELETE_CONFIG`, same name, type and
    # default): singer-sdk 0.54.9 adds it only to SQL targets, so it is declared here.
    th.Property(
        "hard_delete",
        th.BooleanType,
        default=False,
        title="Hard delete",
        description="Delete a user or company in Userpilot when its record is marked deleted "
        "(`_sdc_deleted_at` set, or `deleted_property` true or a timestamp) instead of "
        "identifying it. Userpilot applies deletions at its daily run, 02:00 UTC.",
    ),
    th.Property(
        "deleted_property",
        th.StringType,
        title="Deleted property",
        description="With `hard_delete`: a record property that marks a deleted profile when it "
        "holds true or a timestamp (false, null or missing: not deleted), besides the tap's "
        "`_sdc_deleted_at`.",
    ),
    th.Property(
        "max_deletes_per_run",
        th.CustomType({"type": ["integer", "string"]}),
        default=DEFAULT_MAX_DELETES,
        title="Max deletes per run",
        description="With `hard_delete`: a count of profiles (e.g. `1000`) or a share of the "
        f"run's records (e.g. `10%`, enforced past {SHARE_FLOOR} deletions). A run that would "
        "delete more stops with an error before sending any deletion.",
    ),
).to_dict()


@dataclass(frozen=True)
class Settings:
    """Typed, validated settings (the SDK has filled in defaults)."""

    api_url: str
    stream_kinds: Mapping[str, Kind]
    event_streams: frozenset[str]  # mapped to `events` in `stream_kinds`
    default_kind: Kind | None
    user_id_property: str | None
    company_id_property: str | None
    user_company_property: str
    include_properties: frozenset[str] | None
    exclude_properties: frozenset[str]
    event_user_property: str
    event_names: Mapping[str, str]
    event_name_property: str
    track_requests_per_minute: int
    metadata_separator: str
    arrays: Literal["json", "drop"]
    nulls: Literal["send", "drop"]
    on_invalid_record: Literal["dead_letter", "fail", "skip"]
    dead_letter_path: Path
    max_invalid_share: float
    dry_run: bool
    dry_run_dir: Path
    limits: BatchLimits
    batch_dir: Path
    max_spool_bytes: int
    max_checkpoint_lag_records: int
    max_checkpoint_lag_minutes: float
    job_timeout: float
    job_retries: int
    poll_max_interval: float
    slot_wait_timeout: float
    request_retry_max_time: float
    request_timeout: float
    upload_format: Literal["multipart", "json"]
    termination_grace: float
    send_only_changes: bool
    fingerprint_store_path: Path | None
    fingerprint_store_url: str | None = field(repr=False)  # holds a password
    resend_all: bool
    resend_after_days: float | None
    hard_delete: bool
    deleted_property: str | None
    max_deletes_per_run: DeleteLimit

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Read the settings; raises ValueError naming the setting that is wrong.

        Numbers are made floats here: the SDK reads config files with Decimal for decimals.
        """
        kinds: dict[str, Kind] = {}
        event_streams: set[str] = set()
        for stream, kind in dict(config.get("stream_kinds") or {}).items():
            if kind == EVENTS:
                event_streams.add(stream)
                continue
            if kind not in KINDS:
                msg = (
                    f"`stream_kinds` maps stream {stream!r} to {kind!r}; "
                    "use 'users', 'companies' or 'events'."
                )
                raise ValueError(msg)
            kinds[stream] = kind
        include = config.get("include_properties")
        return cls(
            api_url=config["api_url"],
            stream_kinds=kinds,
            event_streams=frozenset(event_streams),
            default_kind=config.get("default_kind"),
            user_id_property=config.get("user_id_property"),
            company_id_property=config.get("company_id_property"),
            user_company_property=config["user_company_property"],
            include_properties=frozenset(include) if include is not None else None,
            exclude_properties=frozenset(config["exclude_properties"]),
            event_user_property=config.get("event_user_property") or "user_id",
            event_names=dict(config.get("event_names") or {}),
            event_name_property=config.get("event_name_property") or "event_name",
            track_requests_per_minute=int(
                config.get("track_requests_per_minute", DEFAULT_TRACK_PER_MINUTE)
            ),
            metadata_separator=config["metadata_separator"],
            arrays=config["arrays"],
            nulls=config["nulls"],
            on_invalid_record=config["on_invalid_record"],
            dead_letter_path=Path(
                config.get("dead_letter_path")
                or default_path("dead-letters.ndjson", elsewhere=Path(DEAD_LETTERS_OUTSIDE_MELTANO))
            ),
            max_invalid_share=config["max_invalid_percent"] / 100,
            dry_run=config["dry_run"],
            dry_run_dir=Path(
                config.get("dry_run_dir")
                or default_path("dry-run", elsewhere=Path(DRY_RUN_OUTSIDE_MELTANO))
            ),
            limits=BatchLimits(config["max_batch_rows"], config["max_batch_bytes"]),
            batch_dir=Path(config.get("batch_dir") or tempfile.gettempdir()),
            max_spool_bytes=config["max_spool_bytes"],
            max_checkpoint_lag_records=config["max_checkpoint_lag_records"],
            max_checkpoint_lag_minutes=float(config["max_checkpoint_lag_minutes"]),
            job_timeout=float(config["job_timeout"]),
            job_retries=config["job_retries"],
            poll_max_interval=float(config["poll_max_interval"]),
            slot_wait_timeout=float(config["slot_wait_timeout"]),
            request_retry_max_time=float(config["request_retry_max_time"]),
            request_timeout=float(config["request_timeout"]),
            upload_format=config["upload_format"],
            termination_grace=float(config["termination_grace"]),
            send_only_changes=config["send_only_changes"],
            fingerprint_store_path=(
                Path(config["fingerprint_store_path"])
                if config.get("fingerprint_store_path")
                else None
            ),
            fingerprint_store_url=_store_url(config.get("fingerprint_store_url")),
            resend_all=config["resend_all"],
            resend_after_days=(
                float(config["resend_after_days"])
                if config.get("resend_after_days") is not None
                else None
            ),
            hard_delete=bool(config.get("hard_delete", False)),
            deleted_property=config.get("deleted_property") or None,
            max_deletes_per_run=DeleteLimit.parse(
                config.get("max_deletes_per_run", DEFAULT_MAX_DELETES)
            ),
        )

    def is_events(self, stream_name: str) -> bool:
        """Whether the stream's records are events (mapped to `events`, or named so)."""
        return stream_name in self.event_streams or (
            stream_name == EVENTS and stream_name not in self.stream_kinds
        )

    def kind_of(self, stream_name: str) -> Kind:
        """The kind a profile stream loads as; raises ValueError naming the settings to use."""
        if stream_name in self.stream_kinds:
            return self.stream_kinds[stream_name]
        if stream_name == "users":
            return "users"
        if stream_name == "companies":
            return "companies"
        if self.default_kind is not None:
            return self.default_kind
        msg = (
            f"Stream {stream_name!r} is neither 'users', 'companies' nor 'events'. Map it "
            f'with the `stream_kinds` setting, e.g. {{"{stream_name}": "users"}}, set '
            "`default_kind`, or rename it with a stream map; to load nothing from it, drop it "
            "with a stream "
            f'map: `"stream_maps": {{"{stream_name}": "__NULL__"}}`.'
        )
        raise ValueError(msg)


def whole_number(value: float | Decimal) -> int | None:
    """`value` as an int when it is a whole number written as a float (`5.0`), else None."""
    number = Decimal(value)
    if not number.is_finite() or number.adjusted() >= MAX_WHOLE_DIGITS:
        return None
    return int(number) if number == number.to_integral_value() else None


def whole_integer_settings(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, int]:
    """The integer settings that `config` writes as floats (`5.0`), as ints.

    Hand-written and generated configs often write numbers so, and JSON Schema itself calls
    5.0 an integer, but the SDK reads config numbers as Decimal, which its validator does not.
    Raises ValueError naming the first integer setting whose number has a fraction.
    """
    whole: dict[str, int] = {}
    for name, prop in schema.get("properties", {}).items():
        value = config.get(name)
        types = prop.get("type")
        if not isinstance(value, (float, Decimal)) or "integer" not in (types or ()):
            continue
        number = whole_number(value)
        if number is None:
            msg = f"`{name}` takes a whole number, e.g. 60, not {value}."
            raise ValueError(msg)
        whole[name] = number
    return whole


def _store_url(raw: str | None) -> str | None:
    """The store URL, refused now (before any connection) if it does not parse cleanly."""
    if raw:
        check_store_url(raw)
    return raw or None
