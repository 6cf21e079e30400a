"""A record a stream map cannot be evaluated on is an invalid record, not the end of the run.

A map's expressions are the user's code, run by the SDK on every record: `record['region']`
on a record without `region` raises KeyError, `plan.upper()` on a null `plan` raises, a name
the record lacks raises the SDK's `MapExpressionError`. The SDK lets each out of its record
loop, which would end the run with a traceback. Here such a record follows
`on_invalid_record` in the stream the map loads (a dead letter saying which map and what it
raised, counted against `max_invalid_percent`), and the SDK's loop goes on to the stream's
other maps.

The SDK offers no hook around a map, so `guard` wraps the `transform` of each custom map as
the SDK registers a stream's maps (on its SCHEMA); default maps evaluate nothing. A map the
SDK refuses for a stream's SCHEMA (a key property the schema lacks) is no record's fault: it
stops the run in one line (`StreamMapSchemaError`).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from singer_sdk.exceptions import MapExpressionError
from singer_sdk.mapper import CustomStreamMap

from target_userpilot.errors import UserFacingError
from target_userpilot.singer.sinks import RecordSink

if TYPE_CHECKING:
    from collections.abc import Callable

    from singer_sdk.mapper import StreamMap
    from singer_sdk.target_base import Target


class StreamMapSchemaError(UserFacingError):
    """A stream map cannot apply to a stream as its SCHEMA declares it (the SDK refuses it)."""


# The longest part of an expression's error quoted into a reason.
ERROR_CHARS = 160


class MapGuard:
    """Turns what a stream map raises on a record into an invalid record of the map's stream."""

    def __init__(self, target: Target) -> None:
        """Guard the maps of `target`."""
        self._target = target
        # A SCHEMA the SDK finds unchanged keeps its maps: each is wrapped once, not per SCHEMA.
        self._wrapped: weakref.WeakSet[StreamMap] = weakref.WeakSet()

    def guard(self, stream: str) -> None:
        """Wrap the maps the SDK holds for `stream` (after a SCHEMA of it)."""
        for stream_map in self._target.mapper.stream_maps.get(stream, ()):
            if isinstance(stream_map, CustomStreamMap) and stream_map not in self._wrapped:
                stream_map.transform = self._guarded(stream_map)  # type: ignore[method-assign,assignment]
                self._wrapped.add(stream_map)

    def _guarded(
        self, stream_map: CustomStreamMap
    ) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
        transform = stream_map.transform

        def guarded(record: dict[str, Any]) -> dict[str, Any] | None:
            try:
                return transform(record)
            except Exception as exc:  # noqa: BLE001 - whatever the user's expression raises
                self._reject(stream_map, record, exc)
                return None  # the SDK's "left out": it goes on to the stream's next map

        return guarded

    def _reject(self, stream_map: CustomStreamMap, record: dict[str, Any], exc: Exception) -> None:
        sink = self._target._sinks_active.get(stream_map.stream_alias)  # noqa: SLF001
        if not isinstance(sink, RecordSink):
            return  # a stream that loads nothing (Meltano's settings test) fails nothing
        try:
            stream_map.get_filter_result(record)
        except Exception:  # noqa: BLE001 - the filter raised it: say so
            part = "`__filter__`"
        else:
            part = "property expressions"
        sink.take_unmappable(record, unevaluable(stream_map, part, exc))


def unevaluable(stream_map: StreamMap, part: str, exc: Exception) -> str:
    """Why a record is invalid: `part` of `stream_map` raised `exc` on it."""
    # The SDK wraps an undefined name (a field the record lacks) in an error naming only the
    # expression; the name is in its cause.
    cause = exc.__cause__ if isinstance(exc, MapExpressionError) and exc.__cause__ else exc
    return (
        f"the stream map for '{stream_map.stream_alias}' failed on this record: its {part} "
        f"raised {type(cause).__name__}: {str(cause)[:ERROR_CHARS]} (use `record.get(...)` "
        "for a field a record may lack, and test for null before using a value)"
    )
