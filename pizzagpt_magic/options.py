"""Model options: any parameter of the request body (``top_p``, ``seed``, ``stop``, ...), given
as ``KEY=VALUE`` text (``-O``, ``--option``) or as a dict (``options={...}``).

A VALUE that reads as JSON is that JSON value (``0.2``, ``true``, ``null``, ``["\\n\\n"]``,
``{"type": "enabled"}``), anything else is a string. Options are kept in a canonical form: keys
sorted at every level, values as JSON values (so ``-O seed=1`` and ``{"seed": 1}`` are the same
request, and ``1`` and ``1.0`` are not); that form goes into the request body, the cache key and
the log.

Options come in layers, lowest first: the ``PizzaMagics`` settings, an alias's, a saved
prompt's, the question's own. A later layer's value replaces an earlier one's, and a ``None``
(``-O KEY=null``) drops an inherited option. ``temperature`` and ``max_tokens`` are options like
the others in a layer (an alias or a saved prompt may set them), and come out of ``settle`` as
the request's own parameters.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import OptionError

if TYPE_CHECKING:
    from .backends import Backend

__all__ = [
    "OWNED",
    "OptionError",
    "canonical",
    "check_keys",
    "dumps",
    "merge",
    "names_credential",
    "parse_option",
    "parse_options",
    "parse_value",
    "sampling_layer",
    "settle",
]

#: Keys the package itself sets in the request body.
OWNED = frozenset({"model", "messages", "stream", "stream_options", "system", "tools"})
#: The options that are the request's own parameters (``--temperature``, ``--max-tokens``).
SAMPLING = ("temperature", "max_tokens")
_SAMPLING_KEYS = frozenset(SAMPLING)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
# Words of a key that names a credential: keys stay in environment variables.
_CREDENTIAL_WORDS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "accesstoken",
        "authorization",
        "auth",
        "bearer",
        "secret",
        "password",
        "passwd",
        "credential",
        "credentials",
        "cookie",
    }
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def parse_value(text: str) -> Any:
    """``text`` as the JSON value it reads as, else as the string itself."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as ``(KEY, value)``; see ``parse_value``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise OptionError(
            f"A model option is KEY=VALUE (such as seed=7 or stop='[\"\\n\"]'), not {text!r}"
        )
    return key, parse_value(value)


def parse_options(items: Iterable[str] | None) -> dict[str, Any]:
    """Options from ``KEY=VALUE`` texts, a later one of the same key replacing an earlier one
    (a ``None`` value is kept: it drops an inherited option when layers are merged)."""
    options: dict[str, Any] = {}
    for item in items or ():
        key, value = parse_option(item)
        options.pop(key, None)
        options[key] = value
    return options


def canonical(value: Any, where: str = "option") -> Any:
    """``value`` in canonical form: dicts with string keys in sorted order at every level,
    tuples as lists, and nothing that JSON cannot hold (such as NaN, a set or a date)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OptionError(f"The {where} is {value!r}, which JSON cannot hold")
        return value
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise OptionError(f"The {where} has a key {key!r} that is not text")
        return {key: canonical(value[key], f"{where}.{key}") for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(item, f"{where}[{n}]") for n, item in enumerate(value)]
    raise OptionError(f"The {where} is a {type(value).__name__}, which JSON cannot hold")


def names_credential(key: str) -> bool:
    """Whether ``key`` names a credential (``api_key``, ``x-api-key``, ``Authorization``,
    ``access_token``); ``max_tokens`` does not."""
    words = {w.lower() for w in _WORD.findall(key)}
    return (
        bool(words & _CREDENTIAL_WORDS)
        or key.lower().replace("-", "").replace("_", "") in _CREDENTIAL_WORDS
    )


def _credential_path(value: Any, path: str) -> str | None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if names_credential(str(key)):
                return inner
            found = _credential_path(item, inner)
            if found:
                return found
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found = _credential_path(item, f"{path}[{n}]")
            if found:
                return found
    return None


def check_keys(options: Mapping[str, Any]) -> None:
    """An ``OptionError`` for a key the package owns, or one that names a credential at any
    level (an API key or an ``Authorization`` header never travels in options: it would be
    kept in the log and in saved files)."""
    for key in options:
        if key in OWNED:
            raise OptionError(
                f"The option {key!r} is set by pizzagpt_magic itself; leave it out "
                f"(owned: {', '.join(sorted(OWNED))})"
            )
    found = _credential_path(options, "")
    if found:
        raise OptionError(
            f"The option {found!r} names a credential; keys stay in environment variables "
            "(an endpoint's api_key_env), never in options"
        )


def merge(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The layers' options, lowest first: a later value replaces an earlier one, and a None
    drops the key. Checked, in canonical form."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
    check_keys(merged)
    return canonical(merged)


def dumps(options: Mapping[str, Any]) -> str:
    """Options as canonical JSON text."""
    return json.dumps(canonical(options), ensure_ascii=False, separators=(",", ":"))


def _sampling(options: dict[str, Any]) -> tuple[float | None, int | None]:
    temperature = options.pop("temperature", None)
    max_tokens = options.pop("max_tokens", None)
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise OptionError(f"temperature must be a number, not {temperature!r}")
        temperature = float(temperature)
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise OptionError(f"max_tokens must be a whole number of at least 1, not {max_tokens!r}")
    return temperature, max_tokens


def settle(
    backend: Backend,
    *layers: Mapping[str, Any] | None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[Backend, float | None, int | None, dict[str, Any]]:
    """What a request sends: the backend (its alias's options taken out of it), the
    temperature, the max tokens and the other options.

    The layers go from ``settings`` (the ``PizzaMagics`` settings; None values there mean
    "not set") through the alias's options to ``layers``, lowest first (a saved prompt's, then
    the question's). A ``ConfigurationError`` when the backend takes none of them."""
    base = {k: v for k, v in (settings or {}).items() if v is not None}
    if not backend.options and not any(layers) and base.keys() <= _SAMPLING_KEYS:
        # The common question: no options anywhere, only the settings' parameters.
        temperature, max_tokens = _sampling(base)
        if temperature is not None or max_tokens is not None:
            backend.check_parameters(temperature, max_tokens)
        return backend, temperature, max_tokens, {}
    merged = merge(base, backend.options, *layers)
    temperature, max_tokens = _sampling(merged)
    if backend.options:
        import dataclasses

        backend = dataclasses.replace(backend, options={})
    if temperature is not None or max_tokens is not None:
        backend.check_parameters(temperature, max_tokens)
    backend.check_options(merged)
    return backend, temperature, max_tokens, merged


def sampling_layer(temperature: float | None, max_tokens: int | None) -> dict[str, Any]:
    """``temperature`` and ``max_tokens`` as a layer (None: not given, so nothing)."""
    layer: dict[str, Any] = {}
    if temperature is not None:
        layer["temperature"] = temperature
    if max_tokens is not None:
        layer["max_tokens"] = max_tokens
    return layer
