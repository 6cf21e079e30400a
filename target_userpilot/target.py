"""target-userpilot: the Singer target that loads user and company profiles into Userpilot."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import signal
import sys
from typing import IO, TYPE_CHECKING, Any, ClassVar, cast

from singer_sdk.exceptions import ConfigValidationError, MappingError
from singer_sdk.helpers._classproperty import classproperty
from singer_sdk.helpers.capabilities import TargetCapabilities
from singer_sdk.mapper import RemoveRecordTransform
from singer_sdk.target_base import Target

from target_userpilot.errors import UserFacingError
from target_userpilot.fingerprints import (
    FingerprintStore,
    StoreOptions,
    open_store,
    scope_for,
)
from target_userpilot.paths import check_paths
from target_userpilot.profiles import encode_exact
from target_userpilot.run.pipeline import Pipeline
from target_userpilot.run.signals import RunStopped, StopRequest
from target_userpilot.settings import (
    CONFIG_SCHEMA,
    Settings,
    SettingsError,
    whole_integer_settings,
)
from target_userpilot.singer.batch_messages import file_lines, manifest_files
from target_userpilot.singer.envconfig import env_config
from target_userpilot.singer.fastpath import RecordFastPath
from target_userpilot.singer.mapguard import MapGuard, StreamMapSchemaError
from target_userpilot.singer.metrics import log_counters
from target_userpilot.singer.premap import DeletionRecords
from target_userpilot.singer.reader import LineReader
from target_userpilot.singer.sinks import EventSink, NothingToLoadSink, ProfileSink, SinkHost
from target_userpilot.singer.ticking import lines
from target_userpilot.wire import RetryPolicy, UserpilotClient, check_api_url, clean_api_key
from target_userpilot.wire.track import TrackSender

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from singer_sdk.helpers.capabilities import CapabilitiesEnum
    from singer_sdk.sinks import Sink


class StateOutputError(UserFacingError):
    """Standard output, where STATE goes, cannot be written."""


# Seconds a thread may hold the GIL while another waits for it (Python's default: 5 ms). The
# job thread's upload hands the GIL back at every socket and file call, then waits for it while
# the main thread maps records: at 5 ms an upload took 1 to 3 s instead of 0.2 s (measured
# with scripts/bench.py), leaving Userpilot's job slot idle meanwhile.
SWITCH_INTERVAL = 0.0001

# The stream `meltano config test` sends one record of: it tests the settings, so its record
# is not loaded (it would become a user "1" in Userpilot).
MELTANO_TEST_STREAM = "meltano_test_stream"


class TargetUserpilot(SinkHost):
    """Loads `users` and `companies` streams through Userpilot's bulk identify API."""

    name = "target-userpilot"
    config_jsonschema: ClassVar[dict[str, Any]] = CONFIG_SCHEMA
    # `hard-delete`: records marked deleted delete their profiles (setting `hard_delete`).
    capabilities: ClassVar[list[CapabilitiesEnum]] = [
        *Target.capabilities,
        TargetCapabilities.HARD_DELETE,
    ]
    default_sink_class = ProfileSink
    # The SDK's reader, naming the input line of any problem in one sentence.
    message_reader_class = LineReader
    # The SDK drains every sink every 5 minutes by default; against a server that takes 5 to 8
    # minutes per 10,000 rows that would cut tiny batches. Batches are cut by size here, and a
    # batch that holds back STATE is shipped by the checkpoint-lag settings instead.
    _MAX_RECORD_AGE_IN_MINUTES = float("inf")

    def __init__(self, **kwargs: Any) -> None:  # noqa: ANN401 - the SDK's own keyword arguments
        """Set up the pipeline: client, job slot, checkpoints, dead letters."""
        # Before the SDK installs the signal handlers, which only set this flag.
        self._stop_request = StopRequest()
        self._stdout_closed = False
        super().__init__(**kwargs)
        # Sinks are drained one at a time; jobs go through the pipeline's single slot anyway.
        self.max_parallelism = 1
        try:
            self.settings = Settings.from_config(self.config)
            api_url = check_api_url(self.settings.api_url)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        check_paths(self.settings)
        with contextlib.ExitStack() as started:  # closed again unless start-up completes
            client = deleter = track = None
            if not self.settings.dry_run:
                client = UserpilotClient(
                    api_url,
                    self.config["api_key"],
                    retry=RetryPolicy(max_time=self.settings.request_retry_max_time),
                    timeout=(10.0, self.settings.request_timeout),
                    slot_wait_timeout=self.settings.slot_wait_timeout,
                    upload_format=self.settings.upload_format,
                    user_agent=f"{self.name}/{self.plugin_version}",
                    logger=self.logger,
                    sleep=self._stop_request.sleep,
                )
                started.callback(client.close)
                # Before any input is read: a wrong host or key is one clear line at once.
                client.preflight()
                if self.settings.hard_delete:
                    deleter = client.deleter()
                track = self._track_opener(api_url)
            fingerprints = self._open_fingerprints(api_url)
            if fingerprints is not None:
                started.callback(fingerprints.close)
            # A signal that came while no wait was listening.
            self._stop_request.raise_if_requested()
            started.pop_all()
        self.pipeline = Pipeline(
            self.settings,
            client=client,
            emit_state=self._emit_state,
            logger=self.logger,
            fingerprints=fingerprints,
            stop=self._stop_request,
            deleter=deleter,
            track=track,
            account=scope_for(api_url, self.config["api_key"]),
            log_metrics=functools.partial(log_counters, dry_run=self.settings.dry_run),
        )
        self.fast_records = RecordFastPath(self)
        self.map_guard = MapGuard(self)
        # Before stream maps: a map cannot turn a deletion into an update.
        self.deletion_records = (
            DeletionRecords(self, self.settings.deleted_property)
            if self.settings.hard_delete
            else None
        )
        for name in self.UNSUPPORTED_BUILTIN_SETTINGS:
            if self.config.get(name) is not None:
                self.logger.warning("Setting `%s` does nothing in target-userpilot.", name)

    # The SDK adds these to every target; here they would do nothing or harm, so they are not
    # offered (`--about`, Meltano, the Hub). `add_record_metadata` would send `_sdc_*` attributes
    # and make every profile look changed to `send_only_changes`; `load_method` cannot delete or
    # replace anything in Userpilot, which upserts; `batch_size_rows` is `max_batch_rows`. One set
    # anyway (the SDK still reads `add_record_metadata`; `_sdc_*` never become metadata) is named
    # in a warning.
    UNSUPPORTED_BUILTIN_SETTINGS = ("add_record_metadata", "load_method", "batch_size_rows")

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict[str, Any]) -> None:
        """The SDK's built-in settings, less those that mean nothing for Userpilot.

        Overriding this is the SDK's documented way to drop built-ins (capabilities only switch
        off whole groups such as stream maps, and these three are always added).
        """
        super().append_builtin_config(config_jsonschema)
        for name in cls.UNSUPPORTED_BUILTIN_SETTINGS:
            config_jsonschema["properties"].pop(name, None)

    @classproperty
    def _env_var_config(cls) -> dict[str, Any]:  # noqa: N805 - a class property, as in the SDK
        """Settings from `TARGET_USERPILOT_*` variables, numbers and booleans parsed strictly."""
        schema = cls.config_jsonschema
        cls.append_builtin_config(schema)
        return env_config(schema, cls._env_var_prefix)

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """Strip the key's surrounding whitespace; refuse an unusable key without quoting it.

        Integer settings written as whole floats (`5.0`) become ints; one with a fraction is
        refused in one line naming it.

        Runs before the SDK's JSON-schema check, whose message for a key of the wrong type
        would quote the key.
        """
        if "api_key" in self._config:
            try:
                self._config["api_key"] = clean_api_key(self._config["api_key"])
            except ValueError as exc:
                msg = "Config validation failed"
                raise ConfigValidationError(msg, errors=[str(exc)], schema={}) from None
        try:
            self._config.update(whole_integer_settings(self._config, self.config_jsonschema))
        except ValueError as exc:
            msg = "Config validation failed"
            raise ConfigValidationError(msg, errors=[str(exc)], schema={}) from None
        return super()._validate_config(raise_errors=raise_errors)

    def _track_opener(self, api_url: str) -> Callable[[Callable[[float], None]], TrackSender]:
        """How the event thread opens its Track API sender, around the thread's own sleep."""
        settings = self.settings
        key = self.config["api_key"]

        def open_sender(sleep: Callable[[float], None]) -> TrackSender:
            return TrackSender(
                api_url,
                key,
                per_minute=settings.track_requests_per_minute,
                retry=RetryPolicy(max_time=settings.request_retry_max_time),
                timeout=(10.0, settings.request_timeout),
                user_agent=f"{self.name}/{self.plugin_version}",
                logger=self.logger,
                sleep=sleep,
            )

        return open_sender

    def _open_fingerprints(self, api_url: str) -> FingerprintStore | None:
        settings = self.settings
        if not settings.send_only_changes or (settings.dry_run and settings.resend_all):
            return None
        store = open_store(
            scope_for(api_url, self.config["api_key"]),
            url=settings.fingerprint_store_url,
            path=settings.fingerprint_store_path,
            options=StoreOptions(
                max_age_days=settings.resend_after_days,
                logger=self.logger,
                sleep=self._stop_request.sleep,
            ),
        )
        if settings.resend_all:
            store.forget_all()
            self.logger.info("`resend_all`: fingerprints forgotten, every profile is sent.")
        return store

    def get_sink_class(self, stream_name: str) -> type[Sink]:
        """Events streams load through EventSink, the others through ProfileSink.

        The SDK makes a sink even for a stream that a stream map drops (`__NULL__`, null,
        `__else__`), though no record of it will arrive: that one gets a sink that loads nothing.
        """
        if self._dropped_by_stream_map(stream_name):
            self.logger.debug(
                "Stream '%s' is dropped by a stream map: nothing is sent.", stream_name
            )
            return NothingToLoadSink
        if stream_name == MELTANO_TEST_STREAM and stream_name not in self.settings.stream_kinds:
            checked = "not checked (a dry run)" if self.settings.dry_run else "accepted"
            self.logger.info(
                "Stream '%s' is Meltano's settings test: the API key was %s, and its record is "
                "not sent.",
                stream_name,
                checked,
            )
            return NothingToLoadSink
        if self.settings.is_events(stream_name):
            return EventSink
        try:
            self.settings.kind_of(stream_name)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        return ProfileSink

    def _dropped_by_stream_map(self, stream_name: str) -> bool:
        maps = [m for ms in self.mapper.stream_maps.values() for m in ms]
        named = [m for m in maps if m.stream_alias == stream_name]
        return bool(named) and all(isinstance(m, RemoveRecordTransform) for m in named)

    # --- messages ----------------------------------------------------------------------

    def listen(self, file_input: IO[str] | None = None) -> None:  # type: ignore[misc]
        """Run the pipeline over the input; whatever ends it, its batch files are removed.

        The SDK marks `listen` final, but it is the one frame around both its reader (which
        raises on malformed input) and `process_endofpipe`, so the run's cleanup lives here.
        """
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        pipeline = self.pipeline
        try:
            pipeline.start()
            super().listen(file_input if file_input is not None else self._stdin())
        except RunStopped as stopped:
            pipeline.stop(stopped.signum)
            raise SystemExit(128 + stopped.signum) from None
        except BaseException:
            pipeline.fail()
            raise
        finally:
            pipeline.close()

    def _stdin(self) -> IO[str] | None:
        """Standard input as lines, with the pipeline's clock ticking while the tap is silent."""
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):
            return None  # no real stdin (an embedding): the SDK's default
        # The SDK's reader only iterates its input.
        return cast("IO[str]", lines(fd, self.pipeline.tick))

    def _process_record_message(self, message_dict: dict[str, Any]) -> None:
        position = self.pipeline.next_position()
        if self.deletion_records is not None and self.deletion_records.take(message_dict, position):
            return
        if not self.fast_records.handle(message_dict):
            super()._process_record_message(message_dict)

    def _process_schema_message(self, message_dict: dict[str, Any]) -> None:
        try:
            super()._process_schema_message(message_dict)
        except MappingError as exc:
            msg = (
                f"the stream maps cannot apply to stream {message_dict['stream']!r} as its "
                f"SCHEMA declares it: {exc} Fix `stream_maps` (or the tap's SCHEMA) and rerun."
            )
            raise StreamMapSchemaError(msg) from None
        self.map_guard.guard(message_dict["stream"])

    def _process_state_message(self, message_dict: dict[str, Any]) -> None:
        self._assert_line_requires(message_dict, requires={"value"})
        self.pipeline.add_state(message_dict["value"])

    def _process_batch_message(self, message_dict: dict[str, Any]) -> None:
        # The SDK hands BATCH files to the sink whole; reading them here instead sends every
        # record through the same path as a RECORD message (stream maps, validation, positions).
        paths, gzipped = manifest_files(message_dict)
        stream = message_dict["stream"]
        for path in paths:
            for line in file_lines(path, gzipped=gzipped):
                record = self.message_reader.deserialize_json(line.decode())
                self._process_record_message({"type": "RECORD", "stream": stream, "record": record})

    def _process_activate_version_message(self, message_dict: dict[str, Any]) -> None:
        self.logger.info(
            "ACTIVATE_VERSION for stream '%s' acknowledged: Userpilot profiles are upserted, "
            "and deleted only by records marked deleted (`hard_delete`), so there is nothing "
            "to do.",
            message_dict.get("stream"),
        )

    def _write_state_message(self, state: dict[str, Any]) -> None:
        """The SDK's own STATE writes are replaced by the pipeline's checkpoints."""

    def _emit_state(self, state: dict[str, Any]) -> None:
        # Whatever the tap put into its STATE is written back exactly: floats (parsed as
        # Decimal), numbers no float holds, lone surrogates (escaped; ASCII then).
        line = encode_exact(state).decode()
        self.logger.debug("Emitting STATE %s", line)
        if self._stdout_closed:
            return  # the first failed write already stops the run
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except OSError as exc:
            self._stdout_closed = True
            # Python's own flush at exit would fail again, with a message of its own.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            msg = (
                f"cannot write STATE to standard output ({exc.strerror or exc}): whatever "
                "reads it (Meltano, a pipe) stopped. No STATE was lost: rerun from the last "
                "one it stored."
            )
            raise StateOutputError(msg) from None

    def process_endofpipe(self) -> None:
        """End of input: drain the sinks, wait for the last job, emit the last STATE."""
        super().process_endofpipe()
        self.pipeline.finish()

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        # Only a flag: the interrupted main thread may hold any lock. The SDK's own handler
        # drained again and wrote the latest STATE, past unconfirmed data.
        self._stop_request.handle(signum)

    @classmethod
    def invoke(cls, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - the SDK's signature
        """Run the target; a failure the user can fix is one log line and exit status 1."""
        try:
            super().invoke(*args, **kwargs)
        except RunStopped as stopped:  # during start-up: `listen` handles the others
            cls.logger.warning(
                "Received signal %d during start-up: stopped before reading any input; "
                "nothing was sent to Userpilot.",
                stopped.signum,
            )
            raise SystemExit(128 + stopped.signum) from None
        except UserFacingError as exc:
            cls.logger.error(  # noqa: TRY400 - the traceback only when debugging
                "target-userpilot failed: %s",
                exc,
                exc_info=cls.logger.isEnabledFor(logging.DEBUG),
            )
            sys.exit(1)
        finally:
            # The run is over, however it ended: nothing is left to stop. Python restores the
            # default handlers while it shuts down, and a signal then would turn the exit
            # status (0, 1 or 128+signal) into -signal.
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    TargetUserpilot.cli()
