"""The per-record path without the SDK's generic work that is a no-op for a plain stream.

For every RECORD the SDK copies the record, runs it through the stream's maps, looks its sink
up, tries to pop seven `_sdc_` keys, checks whether records are too old, and logs at debug
level. With no stream map, no flattening and no record metadata configured for a stream, all
of that leaves the record as it was (but for `_sdc_` keys, which are stripped here too when a
record has any, through the sink's own hook; deletion records never come here, `premap.py`
takes them first). For
such a stream `RecordFastPath` calls the sink's own steps directly, in the
SDK's order (batch context, validate and parse dates, `preprocess_record`, key check,
`process_record`, the read tally and the `record_count` metric, a drain when the sink is
full), and declines every other record so that it takes the SDK's full path:

- a stream whose maps are not the SDK's identity map (`stream_maps`, `__else__: null`, an alias),
  or whose map flattens (`flattening_enabled`);
- a sink that adds `_sdc_` metadata (`add_record_metadata`), that is not a plain `ProfileSink`,
  or that logs each record (debug logging);
- a target that chooses its sink per record (`get_sink` overridden) or drains by record age;
- a message without `stream` or a `record` object, or a stream not seen in a SCHEMA yet.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from singer_sdk.mapper import SameRecordTransform
from singer_sdk.target_base import Target

from target_userpilot.singer.sinks import ProfileSink

if TYPE_CHECKING:
    from singer_sdk.mapper import StreamMap
    from singer_sdk.sinks.core import Sink

# Keys the SDK strips from every record when `add_record_metadata` is off.
SDC_KEYS = frozenset(
    {
        "_sdc_extracted_at",
        "_sdc_received_at",
        "_sdc_batched_at",
        "_sdc_deleted_at",
        "_sdc_sequence",
        "_sdc_table_version",
        "_sdc_sync_started_at",
    }
)


class RecordFastPath:
    """Hands plain records straight to their sink; declines the others (see the module doc)."""

    def __init__(self, target: Target) -> None:
        """Decide per stream, on the first record after each SCHEMA, for this `target`."""
        self._target = target
        # stream -> (the SDK's maps, its sink, the sink to hand records to or None): the
        # decision holds while the SDK keeps these very objects (a SCHEMA may replace them).
        self._routes: dict[str, tuple[object, object, ProfileSink | None]] = {}
        self._target_ok = type(target).get_sink is Target.get_sink and math.isinf(
            target._MAX_RECORD_AGE_IN_MINUTES  # noqa: SLF001 - the SDK's drain-by-age knob
        )

    def handle(self, message: dict[str, Any]) -> bool:
        """Process a RECORD message as the SDK would; False when the SDK must do it instead."""
        stream = message.get("stream")
        record = message.get("record")
        if type(record) is not dict or type(stream) is not str:
            return False
        sink = self._sink(stream)
        if sink is None:
            return False
        if not SDC_KEYS.isdisjoint(record):
            sink._remove_sdc_metadata_from_record(record)  # noqa: SLF001
        context = sink._get_context(record)  # noqa: SLF001
        sink._validate_and_parse(record)  # noqa: SLF001
        record = sink.preprocess_record(record, context)
        sink._singer_validate_message(record)  # noqa: SLF001
        sink.tally_record_read()
        sink.process_record(record, context)
        sink.record_counter_metric.increment()
        if sink.is_full:  # as the SDK does after each record (today's sink is never full)
            self._target.drain_one(sink)
        return True

    def _sink(self, stream: str) -> ProfileSink | None:
        """The stream's sink if its records may take the fast path, else None."""
        target = self._target
        maps = target.mapper.stream_maps.get(stream)
        sink = target._sinks_active.get(stream)  # noqa: SLF001 - what `get_sink` returns
        cached = self._routes.get(stream)
        if cached is not None and cached[0] is maps and cached[1] is sink:
            return cached[2]
        chosen = self._decide(maps, sink)
        self._routes[stream] = (maps, sink, chosen)
        return chosen

    def _decide(self, maps: list[StreamMap] | None, sink: Sink | None) -> ProfileSink | None:
        if not self._target_ok or maps is None or type(sink) is not ProfileSink:
            return None
        if len(maps) != 1 or type(maps[0]) is not SameRecordTransform:
            return None
        stream_map = maps[0]
        if stream_map.flattening_enabled or stream_map.stream_alias != sink.stream_name:
            return None
        if sink.include_sdc_metadata_properties or sink.logger.isEnabledFor(logging.DEBUG):
            return None
        return sink
