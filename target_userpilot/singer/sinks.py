"""Thin SDK sinks: each record becomes a profile or an event (or a rejection) for the pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_sdk.exceptions import InvalidRecord, MissingKeyPropertiesError
from singer_sdk.helpers._compat import (
    date_fromisoformat,
    datetime_fromisoformat,
    time_fromisoformat,
)
from singer_sdk.helpers._typing import get_datelike_property_type
from singer_sdk.sinks import BatchSink, Sink
from singer_sdk.sinks.core import JSONSchemaValidator
from singer_sdk.target_base import Target

from target_userpilot.events import EventMapping, identity, to_event
from target_userpilot.profiles import (
    MappingSettings,
    Rejection,
    deletion_id,
    id_choice_note,
    resolve_id_property,
    to_profile,
)
from target_userpilot.run.deadletters import InvalidRecordError
from target_userpilot.singer.fastcheck import FastPathValidator, compile_check

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from singer_sdk.sinks.core import BaseJSONSchemaValidator

    from target_userpilot.run.pipeline import Pipeline
    from target_userpilot.settings import Settings


class MissingKeyError(InvalidRecordError, MissingKeyPropertiesError):
    """A record lacks a key property and the policy is `fail`: the SDK's own error for it.

    Only this one of the SDK's record errors has a fatal twin: its `InvalidRecord` (a record
    failing the schema) is a `SkippableSyncError`, which code may catch to skip and go on.
    """


class SinkHost(Target):
    """The target as its sinks see it; the target derives from it, so sinks never import it."""

    settings: Settings
    pipeline: Pipeline  # where the sinks' profiles and events go


class RecordSink(BatchSink):
    """What both sinks share: the tap's schema checks, turned into dead letters."""

    rejected_as: str  # the kind a rejected record of the stream is counted in

    def __init__(
        self,
        target: SinkHost,
        stream_name: str,
        schema: dict[str, Any],
        key_properties: Sequence[str] | None,
    ) -> None:
        """Find the stream's date-like properties once."""
        super().__init__(target, stream_name, schema, key_properties)
        self._pipeline = target.pipeline
        self._invalid: str | None = None
        # What `on_invalid_record: fail` raises for it: the SDK's own error where it has one.
        self._invalid_error: type[InvalidRecordError] = InvalidRecordError
        # The SDK looks up every record key's schema for date-likes on every record; the
        # date-like top-level properties and their parsers are found once here instead.
        self._properties: dict[str, Any] = dict(self.schema.get("properties") or {})
        self._date_parsers = _date_parsers(self._properties)

    @property
    def is_full(self) -> bool:
        """Never: batches are cut by the pipeline at the API's row and byte limits."""
        return False

    def take_unmappable(self, record: dict[str, Any], reason: str) -> None:
        """A record read but never mapped (its stream map failed on it): an invalid record."""
        self.tally_record_read()
        position = self._pipeline.position
        self._pipeline.reject(self.rejected_as, self.stream_name, position, reason, record)
        self.record_counter_metric.increment()

    def get_validator(self) -> BaseJSONSchemaValidator | None:
        """The SDK's validator, behind a fast check that lets the common valid record through."""
        validator = super().get_validator()
        if type(validator) is JSONSchemaValidator:
            check = compile_check(self.schema)
            if check is not None:
                return FastPathValidator(validator, check)
        return validator

    # The SDK stops the whole run on the first record that fails the tap's schema (or lacks
    # a key property). These two hooks are private in the SDK, but they are the only place to
    # turn such a record into a dead letter instead, which is what `on_invalid_record` promises
    # (`fail` too: one line naming the record and the setting, never the SDK's traceback).
    def _validate_and_parse(self, record: dict[str, Any]) -> dict[str, Any]:
        self._invalid = None
        self._invalid_error = InvalidRecordError
        if self._validator is not None:
            try:
                self._validator.validate(record)
            except InvalidRecord as exc:
                self._invalid = f"does not match the stream's JSON schema: {exc.error_message}"
            except ArithmeticError as exc:
                # `multipleOf` on a number such as 1e999999999: the division is impossible.
                self._invalid = f"has a number the stream's JSON schema cannot check ({exc!r})"
        try:
            self._parse_dates(record)
        except (ValueError, TypeError) as exc:  # TypeError: a number where a date belongs
            self._invalid = self._invalid or f"has a date that cannot be parsed: {exc}"
        return record

    def _parse_dates(self, record: dict[str, Any]) -> None:
        """The SDK's `_parse_timestamps_in_record`, without its per-key schema lookups.

        Records with keys outside the schema (the SDK warns about those) and records with a
        date that does not parse (the SDK's `datetime_error_treatment` applies) go through the
        SDK's own method, untouched, so messages and repairs stay the SDK's.
        """
        if not record.keys() <= self._properties.keys():
            self._sdk_parse_dates(record)
            return
        parsed: dict[str, Any] = {}
        for key, parse in self._date_parsers:
            value = record.get(key)
            if value is not None:
                try:
                    parsed[key] = parse(value)
                except ValueError:
                    self._sdk_parse_dates(record)
                    return
        if parsed:
            record.update(parsed)

    def _sdk_parse_dates(self, record: dict[str, Any]) -> None:
        self._parse_timestamps_in_record(
            record=record, schema=self.schema, treatment=self.datetime_error_treatment
        )

    def _singer_validate_message(self, record: dict[str, Any]) -> None:
        for key in self.key_properties:  # once a record: no list built while none is missing
            if key not in record:
                missing = [name for name in self.key_properties if name not in record]
                if self._invalid is None:
                    self._invalid = f"lacks key properties {missing}"
                    self._invalid_error = MissingKeyError
                return


class ProfileSink(RecordSink):
    """Sink for one stream that loads as `users` or `companies`."""

    def __init__(
        self,
        target: SinkHost,
        stream_name: str,
        schema: dict[str, Any],
        key_properties: Sequence[str] | None,
    ) -> None:
        """Resolve the stream's kind and id properties once."""
        super().__init__(target, stream_name, schema, key_properties)
        settings = target.settings
        self.kind = settings.kind_of(stream_name)
        self.rejected_as = self.kind
        configured = (
            settings.user_id_property if self.kind == "users" else settings.company_id_property
        )
        properties = schema.get("properties") or {}
        id_property = resolve_id_property(self.kind, configured, properties, key_properties or [])
        # Read by `premap.py` before the maps; never a trait, nor checked against the schema.
        self._deleted_property = settings.deleted_property if settings.hard_delete else None
        exclude = settings.exclude_properties
        if self._deleted_property:  # a deletion mark, never a trait
            exclude = exclude | {self._deleted_property}
        self.mapping = MappingSettings(
            kind=self.kind,
            id_property=id_property,
            company_property=settings.user_company_property if self.kind == "users" else None,
            include=settings.include_properties,
            exclude=exclude,
            separator=settings.metadata_separator,
            arrays=settings.arrays,
            nulls=settings.nulls,
        )
        self.logger.info(
            "Stream '%s' loads as %s, id from property '%s'.",
            stream_name,
            self.kind,
            id_property,
        )
        note = id_choice_note(self.kind, configured, id_property, properties)
        if note is not None:
            self.logger.info("Stream '%s': %s.", stream_name, note)

    def _validate_and_parse(self, record: dict[str, Any]) -> dict[str, Any]:
        if self._deleted_property:
            # Its mark was read already ("no" in a date-time property is a valid "not deleted").
            record.pop(self._deleted_property, None)
        return super()._validate_and_parse(record)

    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:  # noqa: ARG002
        """Map the record and hand it over; rejections follow `on_invalid_record`."""
        position = self._pipeline.position
        if self._invalid is not None:
            self._pipeline.reject(
                self.kind,
                self.stream_name,
                position,
                self._invalid,
                record,
                error=self._invalid_error,
            )
            return
        result = to_profile(record, self.mapping)
        if isinstance(result, Rejection):
            self._pipeline.reject(self.kind, self.stream_name, position, result.reason, record)
            return
        self._pipeline.add(self.kind, self.stream_name, position, result)

    def take_deletion(
        self,
        record: dict[str, Any],
        position: int,
        invalid: str | None,
        source_keys: Sequence[str],
    ) -> None:
        """A record marked deleted as the tap sent it (`premap.py`), or why its mark is invalid.

        The id is the stream's id property; where a stream map renamed it, the source's only
        key property holds it.
        """
        if invalid is not None:
            self._pipeline.reject(self.kind, self.stream_name, position, invalid, record)
            return
        id_property = self.mapping.id_property
        keyed = record
        if id_property not in record and len(source_keys) == 1 and source_keys[0] in record:
            keyed = {id_property: record[source_keys[0]]}
        profile_id = deletion_id(keyed, self.mapping)
        if isinstance(profile_id, Rejection):
            self._pipeline.reject(self.kind, self.stream_name, position, profile_id.reason, record)
            return
        self._pipeline.delete(self.kind, self.stream_name, position, profile_id)

    def process_batch(self, context: dict[str, Any]) -> None:  # noqa: ARG002
        """An SDK drain: send this kind's open batch."""
        self._pipeline.flush(self.kind)


class NothingToLoadSink(Sink):
    """A stream with nothing to send: a stream map drops it, or it is Meltano's test stream."""

    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        """Nothing is sent."""

    def process_batch(self, context: dict[str, Any]) -> None:
        """Nothing to send."""


def event_mapping(stream: str, key_properties: Sequence[str], settings: Settings) -> EventMapping:
    """The mapping of `stream`, from the event settings and the profiles' metadata settings."""
    user_property = settings.event_user_property
    name_property = settings.event_name_property
    fixed = settings.event_names.get(stream) or None
    dropped = {user_property} if fixed else {user_property, name_property}
    return EventMapping(
        stream=stream,
        user_property=user_property,
        fixed_name=fixed,
        name_property=name_property,
        metadata=MappingSettings(
            kind="users",
            id_property=user_property,
            company_property=None,
            include=settings.include_properties,
            exclude=settings.exclude_properties | dropped,
            separator=settings.metadata_separator,
            arrays=settings.arrays,
            nulls=settings.nulls,
        ),
        key_properties=tuple(key_properties),
    )


class EventSink(RecordSink):
    """Sink for one stream of events: each record is one Track API request."""

    rejected_as = "events"

    def __init__(
        self,
        target: SinkHost,
        stream_name: str,
        schema: dict[str, Any],
        key_properties: Sequence[str] | None,
    ) -> None:
        """Resolve the stream's user, name and metadata rules once."""
        super().__init__(target, stream_name, schema, key_properties)
        settings = target.settings
        self.mapping = event_mapping(stream_name, key_properties or (), settings)
        named = (
            f"named {self.mapping.fixed_name!r}"
            if self.mapping.fixed_name
            else f"named by property '{self.mapping.name_property}'"
        )
        self.logger.info(
            "Stream '%s' loads as events %s, user id from property '%s'.",
            stream_name,
            named,
            self.mapping.user_property,
        )

    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:  # noqa: ARG002
        """Map the record and hand it over; rejections follow `on_invalid_record`."""
        position = self._pipeline.position
        if self._invalid is not None:
            self._pipeline.reject("events", self.stream_name, position, self._invalid, record)
            return
        result = to_event(record, self.mapping)
        if isinstance(result, Rejection):
            self._pipeline.reject("events", self.stream_name, position, result.reason, record)
            return
        self._pipeline.add_event(self.stream_name, position, result, identity(record, self.mapping))

    def process_batch(self, context: dict[str, Any]) -> None:
        """An SDK drain: nothing to do, events are sent one by one."""


def _date_parsers(properties: dict[str, Any]) -> list[tuple[str, Callable[[Any], Any]]]:
    """(key, parser) of the top-level date-time/date/time properties, as the SDK parses them."""
    parsers: list[tuple[str, Callable[[Any], Any]]] = []
    for key, schema in properties.items():
        kind = get_datelike_property_type(schema) if isinstance(schema, dict) else None
        if kind == "time":
            parsers.append((key, time_fromisoformat))
        elif kind == "date":
            parsers.append((key, date_fromisoformat))
        elif kind:
            parsers.append((key, datetime_fromisoformat))
    return parsers
