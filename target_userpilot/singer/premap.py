"""Deletion records are taken from the RECORD as the tap sent it, before any stream map.

A stream map may drop or rename `_sdc_deleted_at` or `deleted_property` (a whitelist map with
`__else__: null` drops both), which would turn a deletion into an update that overwrites the
profile with nulls; and a key-only deletion record (log-based replication sends the keys and
the mark only) may break a map written for whole records. So with `hard_delete` on, each
RECORD's marks are read here first, by the mark table (`deletions.is_deletion`). A deletion,
or a record whose mark is neither a yes nor a no (a dead letter), goes straight to the sink of
each stream its maps load into, never through the maps or the schema; every other record
takes the SDK's path (or `fastpath.py`), where no mark is read again.

Each map's `__filter__` still decides, on the record as the tap sent it (as the SDK evaluates
it): a record it leaves out is neither deleted nor loaded. A filter that cannot be evaluated
(the SDK raises, e.g. a key-only record under `record['region'] == 'eu'`) must not lead to a
deletion, and silently dropping one would hide it: that record is invalid, as `mapguard.py`
makes any record a map fails on.

The SDK offers no hook before its maps (`_process_record_message` runs them first thing), so
the target calls `take` before handing a RECORD to either path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_sdk.mapper import RemoveRecordTransform

from target_userpilot.run.deletions import DeletionMarkError, is_deletion
from target_userpilot.singer.mapguard import unevaluable
from target_userpilot.singer.sinks import NothingToLoadSink, ProfileSink

if TYPE_CHECKING:
    from singer_sdk.target_base import Target


class DeletionRecords:
    """Takes the RECORD messages that delete (or carry an unreadable mark) before the maps."""

    def __init__(self, target: Target, deleted_property: str | None) -> None:
        """Read the marks of `target`'s records; `deleted_property` as configured."""
        self._target = target
        self._deleted_property = deleted_property

    def take(self, message: dict[str, Any], position: int) -> bool:
        """Handle this RECORD if its marks say deleted or cannot be read; False otherwise."""
        stream = message.get("stream")
        record = message.get("record")
        if type(record) is not dict or type(stream) is not str:
            return False  # the SDK's own message for a malformed RECORD
        maps = self._target.mapper.stream_maps.get(stream)
        if maps is None:
            return False  # the SDK's own message for a stream without a SCHEMA
        # A stream a map drops loads nothing and fails nothing.
        kept = [m for m in maps if not isinstance(m, RemoveRecordTransform)]
        sinks = [self._target._sinks_active.get(m.stream_alias) for m in kept]  # noqa: SLF001
        if not all(isinstance(sink, ProfileSink | NothingToLoadSink) for sink in sinks):
            return False  # events (or a sink not made yet): the SDK's path, no mark read
        invalid = None
        try:
            if not is_deletion(record, self._deleted_property):
                return False
        except DeletionMarkError as exc:
            invalid = str(exc)
        for stream_map, sink in zip(kept, sinks, strict=True):
            if not isinstance(sink, ProfileSink):
                continue
            try:
                if not stream_map.get_filter_result(record):
                    continue  # the user's `__filter__` leaves it out: neither loaded nor deleted
            except Exception as exc:  # noqa: BLE001 - whatever the user's expression raises
                reason = unevaluable(stream_map, "`__filter__`", exc)
                sink.take_unmappable(record, f"{reason}; it is not deleted")
                continue
            sink.tally_record_read()
            keys = stream_map.raw_key_properties or ()
            sink.take_deletion(record, position, invalid, keys)
            sink.record_counter_metric.increment()
        return True
