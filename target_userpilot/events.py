"""From one tap record of an `events` stream to one Track API body (or a rejection).

Pure functions. The user id comes from `event_user_property`; the event name from
`event_names` (a fixed name per stream, which wins) or else from `event_name_property`; both
are read as profile ids are (strings or numbers, not blank, not too long). Every other
property is metadata under the profiles' rules (`profiles.py`: flat primitives, dates in UTC,
`_sdc_*` never, `include_properties`/`exclude_properties`, `arrays`, `nulls`).

An event's identity, for `send_only_changes`, is its stream with its key properties' values,
or with the whole record when the stream has no key: a digest, short enough for any store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from target_userpilot.profiles import (
    MappingSettings,
    Metadata,
    Rejection,
    encode_exact,
    encode_line,
    metadata_of,
    required_id,
)

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True)
class EventMapping:
    """How the records of one `events` stream become events."""

    stream: str
    user_property: str
    fixed_name: str | None  # from `event_names`
    name_property: str
    metadata: MappingSettings  # drops the user and name properties
    key_properties: tuple[str, ...]


@dataclass(frozen=True)
class Event:
    """One Track API request: who did what, with flat metadata."""

    user_id: str
    name: str
    metadata: Metadata

    def body(self) -> bytes:
        """The request body, as one compact JSON line."""
        return encode_line(
            {"user_id": self.user_id, "event_name": self.name, "metadata": self.metadata}
        )


def to_event(record: Mapping[str, Any], mapping: EventMapping) -> Event | Rejection:
    """One record as an Event, or a Rejection whose reason says what to fix."""
    user_id = required_id(
        record,
        mapping.user_property,
        "event user id",
        "set `event_user_property` to the property holding the user id",
    )
    if isinstance(user_id, Rejection):
        return user_id
    name = mapping.fixed_name or required_id(
        record,
        mapping.name_property,
        "event name",
        "set `event_name_property`, or name the stream's events in `event_names`",
    )
    if isinstance(name, Rejection):
        return name
    metadata = metadata_of(record, mapping.metadata)
    if isinstance(metadata, Rejection):
        return metadata
    return Event(user_id=user_id, name=name, metadata=metadata)


def identity(record: Mapping[str, Any], mapping: EventMapping) -> str:
    """What makes this event the same event in a later run: a hex digest."""
    if mapping.key_properties:
        what: object = [record.get(key) for key in mapping.key_properties]
    else:
        what = record
    return hashlib.blake2b(encode_exact([mapping.stream, what]), digest_size=16).hexdigest()
