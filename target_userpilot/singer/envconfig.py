"""Settings from environment variables (`--config ENV`), parsed by each setting's schema type.

Containers and production environments configure the target with `TARGET_USERPILOT_<SETTING>`
variables, whose values are always strings. The SDK's parser (`parse_environment_config`) turns
an `integer` variable into a traceback when it is not one (`12.5`), any boolean word it does not
know (`ture`) into False, and leaves a `number` a string that config validation then rejects.
Here integers, numbers and booleans are parsed strictly and a bad value is one error naming the
variable; strings, arrays, objects and the `.env` file stay with the SDK.
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import TYPE_CHECKING, Any

from singer_sdk.configuration._dict_config import parse_environment_config
from singer_sdk.exceptions import ConfigValidationError

if TYPE_CHECKING:
    from collections.abc import Mapping

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})  # the SDK's own words for true
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
LOGGER = logging.getLogger(__name__)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_WHOLE_FLOAT = re.compile(r"[+-]?[0-9]+\.0*")
_EXPECTED = {
    "integer": "a whole number, e.g. 60",
    "number": "a number, e.g. 2.5",
    "boolean": "true or false",
}


def scalar_type(schema: Mapping[str, Any]) -> str | None:
    """`integer`, `number` or `boolean` when that is the setting's one non-null type."""
    raw = schema.get("type")
    types = [raw] if isinstance(raw, str) else [t for t in raw or [] if t != "null"]
    return types[0] if len(types) == 1 and types[0] in _EXPECTED else None


def parse_scalar(text: str, json_type: str) -> int | float | bool:
    """The value of one variable; raises ValueError when it is not of the type."""
    text = text.strip()
    if json_type == "boolean":
        if text.lower() in TRUE_WORDS | FALSE_WORDS:
            return text.lower() in TRUE_WORDS
    elif _INTEGER.fullmatch(text):
        return int(text)
    elif json_type == "integer" and _WHOLE_FLOAT.fullmatch(text):  # `5.0`, as in JSON configs
        return int(text.partition(".")[0])
    elif json_type == "number":
        number = float(text)
        if math.isfinite(number):
            return number
    raise ValueError(text)


def env_config(config_schema: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The settings given as `<prefix><SETTING>` variables; ConfigValidationError if one is bad."""
    properties: Mapping[str, Any] = config_schema.get("properties", {})
    scalars = {name: kind for name, prop in properties.items() if (kind := scalar_type(prop))}
    others = {name: prop for name, prop in properties.items() if name not in scalars}
    # The SDK also loads a `.env` file into the environment here, before the scalars are read.
    config: dict[str, Any] = parse_environment_config({"properties": others}, prefix)
    errors = []
    for name, json_type in scalars.items():
        variable = prefix + name.upper().replace("-", "_")
        text = os.environ.get(variable)
        if text is None:
            continue
        LOGGER.info("Parsing '%s' config from env variable '%s'.", name, variable)
        try:
            config[name] = parse_scalar(text, json_type)
        except ValueError:
            errors.append(f"{variable}={text!r}: `{name}` takes {_EXPECTED[json_type]}.")
    if errors:
        msg = "Invalid settings in environment variables"
        raise ConfigValidationError(msg, errors=errors)
    return config
