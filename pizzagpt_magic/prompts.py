"""Saved prompts and model aliases: TOML files in the user's config folder.

The folder is ``$PIZZAGPT_CONFIG`` when set, else the platform's user config directory
(``platformdirs``). It holds ``aliases.toml`` (one table per alias) and ``prompts/NAME.toml``
(one file per saved prompt). Both are meant to be read and edited by hand; they are read with
``tomllib`` (``tomli`` before Python 3.11) and written with ``tomli-w``. A file edited into
something invalid is a one-line ``ConfigurationError`` naming the file and the field.

A saved prompt keeps its question with its placeholders unexpanded (``{df}``, ``{item}``,
``{input}``) and the settings saved with it: the model or alias, the system message, the format,
the schema (a concise spec as text, a JSON Schema as a table, or as JSON text in ``schema_json``
when it holds a null, which TOML cannot), the concurrency, ``temperature``, ``max_tokens`` and
other model options. An alias keeps a model
id and options. Neither ever holds a credential: an option whose key names one is refused.

TOML has no null, so an option set to null is not saved (it only drops an inherited option
at the moment it is given).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, InterpolationError, OptionError, PizzagptError
from .options import canonical, check_keys
from .transport import _getenv

__all__ = [
    "Alias",
    "SavedPrompt",
    "aliases",
    "aliases_path",
    "config_dir",
    "find_alias",
    "list_prompts",
    "load_prompt",
    "prompt_path",
    "remove_alias",
    "remove_prompt",
    "save_prompt",
    "saved",
    "set_alias",
]

CONFIG_VARIABLE = "PIZZAGPT_CONFIG"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")
_INPUT = re.compile(r"(?<!\{)\{input\}(?!\})")
#: The fields of a saved prompt's file, and of an alias's table (the rest is ``options``).
PROMPT_FIELDS = (
    "prompt",
    "model",
    "system",
    "format",
    "schema",
    "schema_json",
    "concurrency",
    "temperature",
    "max_tokens",
    "options",
)
ALIAS_FIELDS = ("model", "temperature", "max_tokens", "options")
_HEADER = (
    "# {what} of pizzagpt_magic, in TOML: edit it freely. Model options go under [{table}];\n"
    "# API keys never go here: they stay in environment variables.\n"
)


#: The variables the folder is found from (platformdirs reads the last ones).
_DIRECTORY_VARIABLES = (CONFIG_VARIABLE, "XDG_CONFIG_HOME", "HOME", "APPDATA", "USERPROFILE")


def config_dir() -> Path:
    """The folder of saved prompts and aliases: ``$PIZZAGPT_CONFIG``, else the user config
    directory."""
    return _folders(*map(_getenv, _DIRECTORY_VARIABLES))[0]


def aliases_path() -> Path:
    return _folders(*map(_getenv, _DIRECTORY_VARIABLES))[1]


@functools.lru_cache(maxsize=8)
def _folders(configured: str | None, *variables: str | None) -> tuple[Path, Path, str]:
    """The folder, the alias file and its path as text, found once per value of the variables
    they depend on: a model id is resolved for every question, and platformdirs and ``Path``
    take microseconds."""
    if configured:
        folder = Path(configured).expanduser()
    else:
        from platformdirs import user_config_dir

        folder = Path(user_config_dir("pizzagpt-magic", appauthor=False))
    aliases = folder / "aliases.toml"
    return folder, aliases, str(aliases)


def prompt_path(name: str) -> Path:
    """The file of the saved prompt ``name`` (which need not exist)."""
    return config_dir() / "prompts" / f"{check_name(name, 'a saved prompt')}.toml"


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"{name!r} cannot name {what}: use letters, digits, '_' and '-', starting with a "
            "letter or digit"
        )
    return name


# -- reading and writing TOML ------------------------------------------------------------------


def _toml() -> Any:
    """``tomllib``, imported when a file is first read (``tomli`` before Python 3.11)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the python_version marker installs tomli there
        import tomli as tomllib
    return tomllib


def _loads(text: str) -> dict[str, Any]:
    return _toml().loads(text)


def _read(path: Path) -> dict[str, Any]:
    tomllib = _toml()
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _write(path: Path, data: Mapping[str, Any], header: str) -> Path:
    """Write ``data`` as TOML to ``path`` at once (a reader never sees half a file)."""
    import tomli_w

    text = tomli_w.dumps(data, multiline_strings=True)
    if _loads(text) != data:  # a multi-line string would not read back as it is ("\r\n")
        text = tomli_w.dumps(data)
    text = header + text
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigurationError(f"Cannot write {path}: {exc.strerror or exc}") from None
    return path


def _tomlable(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as TOML holds them: nulls left out (TOML has none), at every level."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            value = _tomlable(value)
        elif isinstance(value, list):
            if any(item is None for item in value):
                raise OptionError(f"The option {key!r} holds a null in a list, which TOML cannot")
            value = [_tomlable(v) if isinstance(v, Mapping) else v for v in value]
        out[key] = value
    return out


class _Fields:
    """Reads one table's fields, each error naming the file and the field."""

    def __init__(self, path: Path, table: Mapping[str, Any], prefix: str = "") -> None:
        self.path = path
        self.table = table
        self.prefix = prefix

    def fail(self, name: str, problem: str) -> ConfigurationError:
        return ConfigurationError(f"{self.path}: {self.prefix}{name}: {problem}")

    def unknown(self, known: tuple[str, ...]) -> None:
        for name in self.table:
            if name not in known:
                raise self.fail(name, f"unknown field (known: {', '.join(known)})")

    def text(self, name: str, required: bool = False) -> str | None:
        value = self.table.get(name)
        if value is None:
            if required:
                raise self.fail(name, "missing")
            return None
        if not isinstance(value, str):
            raise self.fail(name, f"must be text, not {_kind(value)}")
        return value

    def whole(self, name: str) -> int | None:
        value = self.table.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(name, f"must be a whole number of at least 1, not {value!r}")
        return value

    def schema(self) -> Any:
        """A saved prompt's schema: ``schema`` (a spec as text, a JSON Schema as a table) or
        ``schema_json`` (a JSON Schema as JSON text), checked as ``schema.as_schema`` does."""
        if "schema" in self.table and "schema_json" in self.table:
            raise self.fail("schema_json", "give the schema once: schema or schema_json")
        name = "schema_json" if "schema_json" in self.table else "schema"
        value = self.table.get(name)
        if value is None:
            return None
        if name == "schema_json":
            if not isinstance(value, str):
                raise self.fail(name, f"must be JSON text, not {_kind(value)}")
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise self.fail(name, f"not JSON ({exc})") from None
            if not isinstance(value, dict):
                raise self.fail(name, "must be a JSON object")
        elif not isinstance(value, (str, Mapping)):
            raise self.fail(
                name, f"must be a spec (text) or a JSON Schema (a table), not {_kind(value)}"
            )
        if isinstance(value, Mapping):
            value = dict(value)
        import importlib.util

        # The schema's content is checked here when the validator is installed; else when it
        # is used, which then says what to install.
        if importlib.util.find_spec("jsonschema") is not None:
            from .schema import as_schema

            try:
                as_schema(value)
            except PizzagptError as exc:
                raise self.fail(name, str(exc)) from None
        return value

    def options(self) -> dict[str, Any]:
        """The table's model options: ``temperature``, ``max_tokens`` and ``[options]``."""
        options = self.table.get("options", {})
        if not isinstance(options, Mapping):
            raise self.fail("options", f"must be a table, not {_kind(options)}")
        layer = dict(options)
        for name in ("temperature", "max_tokens"):
            if name in options:
                raise self.fail(f"options.{name}", f"goes outside [options]: {name} = ...")
            if name in self.table:
                layer[name] = self.table[name]
        temperature = layer.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool) or not isinstance(temperature, (int, float))
        ):
            raise self.fail("temperature", f"must be a number, not {temperature!r}")
        if "max_tokens" in layer:
            self.whole("max_tokens")
        try:
            check_keys(layer)
            return canonical(layer)
        except OptionError as exc:
            raise self.fail("options", str(exc)) from None


def _kind(value: Any) -> str:
    names = {str: "text", bool: "true/false", int: "a number", float: "a number", list: "a list"}
    return names.get(type(value), "a table" if isinstance(value, Mapping) else type(value).__name__)


def _sampling_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as saved: ``temperature`` and ``max_tokens`` as fields, the rest a table."""
    data = _tomlable(options)
    fields: dict[str, Any] = {k: data.pop(k) for k in ("temperature", "max_tokens") if k in data}
    if data:
        fields["options"] = data
    return fields


# -- model aliases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Alias:
    """A name for a model id with options (``temperature``, ``max_tokens`` among them)."""

    name: str
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)


#: How long the alias table is used before its file is looked at again, in seconds: a model
#: id is resolved for every question, and a look at the file costs more than the rest.
RECHECK_SECONDS = 1.0
# (PIZZAGPT_CONFIG, when the file was looked at, its path, its stamp, the table)
_alias_cache: list[Any] = [None, -RECHECK_SECONDS, "", None, {}]


def aliases() -> dict[str, Alias]:
    """Every alias, by name: read again when the file has changed (looked at once a second
    at most; this process's own changes are seen at once)."""
    configured = _getenv(CONFIG_VARIABLE)
    now = time.monotonic()
    cache = _alias_cache
    if cache[0] == configured and now - cache[1] < RECHECK_SECONDS:
        return cache[4]
    _, path, name = _folders(configured, *map(_getenv, _DIRECTORY_VARIABLES[1:]))
    try:
        stat = os.stat(name)
    except OSError:
        stamp = None
    else:
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if stamp is None:
        table: dict[str, Alias] = {}
    elif cache[2] == name and cache[3] == stamp:
        table = cache[4]
    else:
        table = _parse_aliases(path, _read(path))
    cache[:] = [configured, now, name, stamp, table]
    return table


def _forget_aliases() -> None:
    _alias_cache[:] = [None, -RECHECK_SECONDS, "", None, {}]


def _parse_aliases(path: Path, data: Mapping[str, Any]) -> dict[str, Alias]:
    table: dict[str, Alias] = {}
    for name, entry in data.items():
        if not isinstance(entry, Mapping):
            raise ConfigurationError(
                f"{path}: {name}: must be a table ([{name}] with model = ...), not {_kind(entry)}"
            )
        if not _NAME.fullmatch(name):
            raise ConfigurationError(f"{path}: {name}: not a name an alias can have")
        fields = _Fields(path, entry, f"{name}.")
        fields.unknown(ALIAS_FIELDS)
        model = fields.text("model", required=True)
        assert model is not None
        table[name] = Alias(name, model, fields.options())
    return table


def find_alias(name: str) -> Alias | None:
    """The alias ``name``, or None (a model id that is not an alias)."""
    if ":" in name or "." in name:  # a PROVIDER:MODEL or a class path: never an alias
        return None
    return aliases().get(name)


def set_alias(name: str, model: str, options: Mapping[str, Any] | None = None) -> Alias:
    """Save the alias ``name`` for ``model`` with ``options``; a same name is replaced."""
    from .backends import PIZZAGPT

    check_name(name, "an alias")
    if name == PIZZAGPT:
        raise ConfigurationError("'pizzagpt' names the Pizzagpt provider, not an alias")
    if not model or not model.strip():
        raise ConfigurationError(f"Name the model of the alias: --alias {name}=MODEL")
    if find_alias(model) is not None:
        raise ConfigurationError(
            f"{model!r} is an alias itself; an alias names a model id (such as "
            f"{aliases()[model].model!r})"
        )
    layer = {k: v for k, v in (options or {}).items() if v is not None}
    check_keys(layer)
    alias = Alias(name, model.strip(), canonical(layer))
    path = aliases_path()
    data = _read(path) if path.exists() else {}
    data[name] = {"model": alias.model, **_sampling_fields(alias.options)}
    _write(path, data, _HEADER.format(what="Model aliases", table="NAME.options"))
    _forget_aliases()
    return alias


def remove_alias(name: str) -> bool:
    """Remove the alias ``name``; whether there was one."""
    path = aliases_path()
    if not path.exists():
        return False
    data = _read(path)
    if name not in data:
        return False
    del data[name]
    _write(path, data, _HEADER.format(what="Model aliases", table="NAME.options"))
    _forget_aliases()
    return True


# -- saved prompts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedPrompt:
    """A question with its placeholders unexpanded and the settings saved with it.

    ``ask``, ``ask_many`` and the other entry points take one in place of a question:
    ``ask(saved("tsum"), variables={"text": ...})``, or ``saved("tsum").fill(text=...)``.
    """

    name: str
    prompt: str
    model: str | None = None
    system: str | None = None
    format: str | None = None
    concurrency: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    #: A concise spec (text) or a JSON Schema (a dict); see ``schema.as_schema``.
    schema: Any = None
    variables: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def fill(self, **variables: Any) -> SavedPrompt:
        """This prompt with values for its placeholders (``input`` among them)."""
        return replace(self, variables={**self.variables, **variables})

    def with_input(self, text: str | None) -> str:
        """The question with ``{input}`` replaced by ``text`` as it is (which may hold
        references of its own), or ``text`` appended when it has no ``{input}``."""
        if _INPUT.search(self.prompt):
            if text is None or not text.strip():
                raise InterpolationError(
                    f"The saved prompt {self.name!r} needs {{input}}: give the question "
                    "with the run",
                    "input",
                )
            return _INPUT.sub(lambda _: text, self.prompt)
        if text and text.strip():
            return f"{self.prompt.rstrip()}\n\n{text.strip()}"
        return self.prompt

    def render(self, variables: Mapping[str, Any] | None = None, budget: int | None = None) -> str:
        """The question with every placeholder filled from ``variables`` (and ``fill``'s);
        ``input``, when the prompt has no ``{input}``, is appended. A placeholder with no
        value is an ``InterpolationError`` naming it."""
        from .interpolate import DEFAULT_BUDGET, format_value, interpolate

        values = {**self.variables, **(variables or {})}
        template = self.prompt
        if "input" in values and not _INPUT.search(template):
            template = f"{template.rstrip()}\n\n{{input}}"
        limit = budget or DEFAULT_BUDGET
        return interpolate(template, values, lambda value: format_value(value, limit))

    def render_system(
        self, variables: Mapping[str, Any] | None = None, budget: int | None = None
    ) -> str | None:
        """The system message with its placeholders filled, as ``render`` fills the question's."""
        if self.system is None:
            return None
        from .interpolate import DEFAULT_BUDGET, format_value, interpolate

        limit = budget or DEFAULT_BUDGET
        values = {**self.variables, **(variables or {})}
        return interpolate(self.system, values, lambda value: format_value(value, limit))

    def to_toml(self) -> dict[str, Any]:
        data: dict[str, Any] = {"prompt": self.prompt}
        for name in ("model", "system", "format"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if isinstance(self.schema, str):
            data["schema"] = self.schema
        elif self.schema is not None:
            if _holds_null(self.schema):  # TOML has no null: the schema as JSON text
                data["schema_json"] = json.dumps(self.schema, ensure_ascii=False, indent=2)
            else:
                data["schema"] = self.schema
        if self.concurrency is not None:
            data["concurrency"] = self.concurrency
        data.update(_sampling_fields(self.options))
        return data


def _holds_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, Mapping):
        return any(_holds_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_null(v) for v in value)
    return False


def save_prompt(prompt: SavedPrompt) -> Path:
    """Write ``prompt`` to its file (a same name is replaced); its path."""
    path = prompt_path(prompt.name)
    if not prompt.prompt.strip():
        raise ConfigurationError("Nothing to save: the question is empty")
    check_keys(prompt.options)
    return _write(
        path,
        prompt.to_toml(),
        _HEADER.format(what=f"The saved prompt {prompt.name!r}", table="options"),
    )


def load_prompt(name: str) -> SavedPrompt:
    """The saved prompt ``name``; a ``ConfigurationError`` when there is none or its file is
    invalid."""
    path = prompt_path(name)
    if not path.exists():
        known = ", ".join(p.name for p in list_prompts(check=False)) or "none yet"
        raise ConfigurationError(
            f"No saved prompt named {name!r} (saved: {known}); save one with %%pizza --save {name}"
        )
    return _parse_prompt(name, path, _read(path))


def _parse_prompt(name: str, path: Path, data: Mapping[str, Any]) -> SavedPrompt:
    from .render import FORMATS

    fields = _Fields(path, data)
    fields.unknown(PROMPT_FIELDS)
    prompt = fields.text("prompt", required=True)
    assert prompt is not None
    if not prompt.strip():
        raise fields.fail("prompt", "is empty")
    format = fields.text("format")
    if format is not None and format.lower() not in FORMATS:
        raise fields.fail("format", f"must be one of {', '.join(FORMATS)}, not {format!r}")
    return SavedPrompt(
        name,
        prompt,
        model=fields.text("model"),
        system=fields.text("system"),
        format=format.lower() if format else None,
        concurrency=fields.whole("concurrency"),
        options=fields.options(),
        schema=fields.schema(),
    )


def list_prompts(check: bool = True) -> list[SavedPrompt]:
    """Every saved prompt, by name (an invalid file is an error, unless ``check`` is False:
    then it is left out)."""
    folder = config_dir() / "prompts"
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.toml")):
        if not _NAME.fullmatch(path.stem):
            continue
        try:
            found.append(_parse_prompt(path.stem, path, _read(path)))
        except ConfigurationError:
            if check:
                raise
    return found


def remove_prompt(name: str) -> Path:
    """Delete the saved prompt ``name``; its former path."""
    path = prompt_path(name)
    try:
        path.unlink()
    except FileNotFoundError:
        raise ConfigurationError(f"No saved prompt named {name!r}") from None
    return path


def saved(name: str) -> SavedPrompt:
    """The saved prompt ``name``, for ``ask``, ``ask_many`` and the other entry points."""
    return load_prompt(name)
