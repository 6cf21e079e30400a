"""target-userpilot: the Singer target that loads user and company profiles into Userpilot."""

from __future__ import annotations

import functools
import gzip
import sys
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, ParamSpec, TypeVar

from singer_sdk.helpers._batch import BaseBatchFileEncoding, StorageTarget
from singer_sdk.target_base import Target

from target_userpilot.batches import BatchFileError
from target_userpilot.client import RetryPolicy, UserpilotClient, UserpilotError, check_api_url
from target_userpilot.deadletters import InvalidRecordError
from target_userpilot.fastpath import FastSingerReader, RecordFastPath
from target_userpilot.fingerprints import (
    FingerprintStore,
    FingerprintStoreBusyError,
    default_store_path,
    scope_for,
)
from target_userpilot.jobs import JobFailedError
from target_userpilot.pipeline import Pipeline
from target_userpilot.profiles import encode_json
from target_userpilot.settings import CONFIG_SCHEMA, Settings
from target_userpilot.sinks import ProfileSink

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from singer_sdk.sinks import Sink

# Failures a user can act on: logged as one clear line, exit status 1, no traceback.
USER_FACING_ERRORS = (
    UserpilotError,
    JobFailedError,
    InvalidRecordError,
    FingerprintStoreBusyError,
    BatchFileError,
)

P = ParamSpec("P")
R = TypeVar("R")


def _stops_on_failure(
    handler: Callable[Concatenate[TargetUserpilot, P], R],
) -> Callable[Concatenate[TargetUserpilot, P], R]:
    """A message handler that, when it fails, stops the job slot and removes unconfirmed batches.

    The SDK's `listen` is final, so each handler that can fail once batches exist is wrapped.
    """

    @functools.wraps(handler)
    def wrapper(target: TargetUserpilot, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return handler(target, *args, **kwargs)
        except Exception:
            try:
                target.pipeline.abort()
            except Exception:  # the first failure is the one to report
                target.logger.exception("Cleaning up after the failure failed too")
            raise

    return wrapper


class TargetUserpilot(Target):
    """Loads `users` and `companies` streams through Userpilot's bulk identify API."""

    name = "target-userpilot"
    config_jsonschema: ClassVar[dict[str, Any]] = CONFIG_SCHEMA
    default_sink_class = ProfileSink
    message_reader_class = FastSingerReader
    # The SDK drains every sink every 5 minutes by default; against a server that takes 5 to 8
    # minutes per 10,000 rows that would cut tiny batches. Batches are cut by size here, and a
    # batch that holds back STATE is shipped by the checkpoint-lag settings instead.
    _MAX_RECORD_AGE_IN_MINUTES = float("inf")

    def __init__(self, **kwargs: Any) -> None:  # noqa: ANN401 - the SDK's own keyword arguments
        """Set up the pipeline: client, job slot, checkpoints, dead letters."""
        super().__init__(**kwargs)
        # Sinks are drained one at a time; jobs go through the pipeline's single slot anyway.
        self.max_parallelism = 1
        try:
            self.settings = Settings.from_config(self.config)
            api_url = check_api_url(self.settings.api_url)
        except ValueError as exc:
            raise UserpilotError(str(exc)) from None
        client = None
        if not self.settings.dry_run:
            client = UserpilotClient(
                api_url,
                self.config["api_key"],
                retry=RetryPolicy(max_time=self.settings.request_retry_max_time),
                timeout=(10.0, self.settings.request_timeout),
                slot_wait_timeout=self.settings.slot_wait_timeout,
                user_agent=f"{self.name}/{self.plugin_version}",
                logger=self.logger,
            )
        self.pipeline = Pipeline(
            self.settings,
            client=client,
            emit_state=self._emit_state,
            logger=self.logger,
            fingerprints=self._open_fingerprints(api_url),
        )
        self.fast_records = RecordFastPath(self)

    def _open_fingerprints(self, api_url: str) -> FingerprintStore | None:
        settings = self.settings
        if not settings.send_only_changes or (settings.dry_run and settings.resend_all):
            return None
        store = FingerprintStore(
            settings.fingerprint_store_path or default_store_path(),
            scope_for(api_url, self.config["api_key"]),
            max_age_days=settings.resend_after_days,
            logger=self.logger,
        )
        if settings.resend_all:
            store.forget_all()
            self.logger.info("`resend_all`: fingerprints forgotten, every profile is sent.")
        return store

    def get_sink_class(self, stream_name: str) -> type[Sink]:
        """Every stream loads through ProfileSink once its kind is known."""
        try:
            self.settings.kind_of(stream_name)
        except ValueError as exc:
            raise UserpilotError(str(exc)) from None
        return ProfileSink

    # --- messages ----------------------------------------------------------------------

    @_stops_on_failure
    def _process_schema_message(self, message_dict: dict[str, Any]) -> None:
        super()._process_schema_message(message_dict)

    @_stops_on_failure
    def _process_record_message(self, message_dict: dict[str, Any]) -> None:
        self.pipeline.next_position()
        if not self.fast_records.handle(message_dict):
            super()._process_record_message(message_dict)

    def _process_state_message(self, message_dict: dict[str, Any]) -> None:
        self._assert_line_requires(message_dict, requires={"value"})
        self.pipeline.add_state(message_dict["value"])

    @_stops_on_failure
    def _process_batch_message(self, message_dict: dict[str, Any]) -> None:
        # The SDK hands BATCH files to the sink whole; reading them here instead sends every
        # record through the same path as a RECORD message (stream maps, validation, positions).
        encoding = BaseBatchFileEncoding.from_dict(message_dict["encoding"])
        if encoding.format != "jsonl":
            msg = f"BATCH messages in {encoding.format!r} are not supported; use jsonl."
            raise UserpilotError(msg)
        stream = message_dict["stream"]
        for url in message_dict["manifest"]:
            head, tail = StorageTarget.split_url(url)
            with (
                StorageTarget.from_url(head).open(tail, mode="rb") as raw,
                gzip.open(raw) if encoding.compression == "gzip" else raw as lines,
            ):
                for line in lines:
                    if line.strip():
                        record = self.message_reader.deserialize_json(line.decode())
                        self._process_record_message(
                            {"type": "RECORD", "stream": stream, "record": record}
                        )

    def _process_activate_version_message(self, message_dict: dict[str, Any]) -> None:
        self.logger.info(
            "ACTIVATE_VERSION for stream '%s' acknowledged: Userpilot profiles are upserted and "
            "never deleted, so there is nothing to do.",
            message_dict.get("stream"),
        )

    def _write_state_message(self, state: dict[str, Any]) -> None:
        """The SDK's own STATE writes are replaced by the pipeline's checkpoints."""

    def _emit_state(self, state: dict[str, Any]) -> None:
        # Taps put floats (parsed as Decimal) into bookmarks: write them back exactly.
        line = encode_json(state)
        self.logger.debug("Emitting STATE %s", line)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    @_stops_on_failure
    def process_endofpipe(self) -> None:
        """End of input: drain the sinks, wait for the last job, emit the last STATE."""
        super().process_endofpipe()
        self.pipeline.finish()

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        # The SDK's handler drains again and writes the latest STATE, past unconfirmed data.
        self.logger.warning("Received signal %d: stopping.", signum)
        self.pipeline.terminate()
        sys.exit(128 + signum)

    @classmethod
    def invoke(cls, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - the SDK's signature
        """Run the target; a failure the user can fix is one log line and exit status 1."""
        try:
            super().invoke(*args, **kwargs)
        except USER_FACING_ERRORS as exc:
            cls.logger.error("target-userpilot failed: %s", exc)  # noqa: TRY400 - no traceback
            sys.exit(1)


if __name__ == "__main__":
    TargetUserpilot.cli()
