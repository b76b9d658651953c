"""Backends: which provider answers a model id, and the endpoints known.

A model id is ``MODEL`` (a Pizzagpt model, ``gpt-4o-mini``), ``PROVIDER:MODEL`` (split at the first
``:`` only when the part before it names a provider, so ``ollama:llama3.2:1b`` and
``openrouter:meta-llama/llama-3.1-8b-instruct`` work as typed) or ``package.module.Class[:MODEL]``
(any gpt4free-style provider class; its default model without ``:MODEL``).

Providers are ``pizzagpt``, the endpoint presets (``PRESETS``: ``anthropic`` speaks Anthropic's
Messages API, the others the OpenAI-compatible Chat Completions API), endpoints added with
``register_endpoint`` or ``PizzaMagics.endpoints``, and what installed packages declare in the
entry point group ``pizzagpt_magic.providers`` (a provider class, or an endpoint as a dict with
``base_url``, ``api_key_env`` and optionally ``api``).

A model alias (``%pizza --alias fast=ollama:llama3.2 --temperature 0.2``, kept in the user's
config folder by ``prompts``) names a model id and options; ``resolve`` gives its backend with
those options on it, for ``options.settle`` to put below the question's own.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigurationError, ModelNotFoundError, ProviderError
from .prompts import find_alias
from .providers.anthropic import Anthropic
from .providers.openai import OpenAICompatible
from .transport import _getenv

__all__ = [
    "APIS",
    "PRESETS",
    "Backend",
    "Endpoint",
    "endpoints",
    "list_providers",
    "model_id",
    "register_endpoint",
    "resolve",
]

ENTRY_POINT_GROUP = "pizzagpt_magic.providers"
PIZZAGPT = "pizzagpt"
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_NAME = re.compile(r"[A-Za-z][\w.-]*")


#: The wire APIs an endpoint may speak, and the provider class that speaks each.
APIS: dict[str, Any] = {"openai": OpenAICompatible, "anthropic": Anthropic}


def model_id(provider: str, model: str) -> str:
    """The model id of ``model`` at ``provider`` (a Pizzagpt model stands alone)."""
    return model if provider == PIZZAGPT else f"{provider}:{model}"


@dataclass(frozen=True)
class Endpoint:
    """An endpoint: its base URL, the variable holding its key (None: no key), a variable that
    overrides the base URL, and the API it speaks (``APIS``): ``"openai"``, the Chat
    Completions API under a base URL that most often ends in ``/v1``, or ``"anthropic"``, the
    Messages API under the service's root."""

    name: str
    base_url: str
    api_key_env: str | None = None
    base_url_env: str | None = None
    api: str = "openai"
    #: Whether it offers a Batch API (``/files`` and ``/batches``, or Messages batches).
    batch_api: bool = False

    @property
    def provider(self) -> Any:
        """The provider class that speaks this endpoint's API."""
        return APIS[self.api]

    @property
    def url(self) -> str:
        """The base URL in effect: the override variable's value when it is set."""
        value = (_getenv(self.base_url_env) or "").strip() if self.base_url_env else ""
        if not value:
            return self.base_url
        if self.base_url_env == "OLLAMA_HOST":
            # Ollama's own convention: host, host:port or a URL, without the /v1.
            if "://" not in value:
                value = f"http://{value}"
            host_port = value.split("://", 1)[1]
            if ":" not in host_port.split("/", 1)[0].rsplit("]", 1)[-1]:
                value = f"{value.rstrip('/')}:11434"
            return f"{value.rstrip('/')}/v1"
        return value.rstrip("/")


PRESETS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        Endpoint(
            "openai",
            "https://api.openai.com/v1",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            batch_api=True,
        ),
        Endpoint("ollama", "http://localhost:11434/v1", None, "OLLAMA_HOST"),
        Endpoint("lmstudio", "http://localhost:1234/v1"),
        Endpoint("llamacpp", "http://localhost:8080/v1"),
        Endpoint("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        Endpoint(
            "anthropic",
            "https://api.anthropic.com",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            api="anthropic",
            batch_api=True,
        ),
        Endpoint(
            "gemini", "https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY"
        ),
        Endpoint("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", batch_api=True),
        Endpoint("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
        Endpoint("deepseek", "https://api.deepseek.com", "DEEPSEEK_API_KEY"),
        Endpoint("together", "https://api.together.ai/v1", "TOGETHER_API_KEY"),
        Endpoint("vllm", "http://localhost:8000/v1"),
    )
}

_registered: dict[str, Endpoint] = {}


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == PIZZAGPT:
        raise ConfigurationError(
            f"{name!r} cannot name an endpoint: use letters, digits, '_', '-' or '.', "
            "starting with a letter (and not 'pizzagpt')"
        )
    return name


def make_endpoint(name: str, spec: Any) -> Endpoint:
    """An ``Endpoint`` from a dict ``{"base_url": ..., "api_key_env": ..., "api": ...}`` (or an
    Endpoint); ``api`` is ``"openai"`` when not given."""
    from .transport import check_url

    if isinstance(spec, Endpoint):
        return spec
    if not isinstance(spec, Mapping) or not isinstance(spec.get("base_url"), str):
        raise ConfigurationError(
            f"endpoint {name!r} needs a dict with 'base_url' (and optionally 'api_key_env')"
        )
    unknown = set(spec) - {"base_url", "api_key_env", "api", "batch_api"}
    if unknown:
        raise ConfigurationError(
            f"endpoint {name!r} has unknown keys: {', '.join(sorted(unknown))}"
        )
    key_env = spec.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not key_env.isidentifier()):
        raise ConfigurationError(
            f"endpoint {name!r}: api_key_env names an environment variable, not {key_env!r}"
        )
    api = spec.get("api") or "openai"
    if api not in APIS:
        raise ConfigurationError(
            f"endpoint {name!r}: api is one of {', '.join(map(repr, APIS))}, not {api!r}"
        )
    url = check_url(spec["base_url"], f"the base_url of endpoint {name!r}")
    return Endpoint(
        _check_name(name), url, key_env or None, api=api, batch_api=bool(spec.get("batch_api"))
    )


def register_endpoint(
    name: str,
    base_url: str,
    api_key_env: str | None = None,
    api: str = "openai",
    batch_api: bool = False,
) -> None:
    """Add an endpoint (a same name replaces a preset): then ``ask(..., model="NAME:MODEL")``
    and ``%pizza -m NAME:MODEL`` use it.

    ``api_key_env`` names the environment variable holding its key; the key itself is never
    taken as an argument, so it cannot end up in a notebook. ``api`` is the API it speaks:
    ``"openai"`` (Chat Completions) or ``"anthropic"`` (Messages). ``batch_api=True`` says it
    offers that API's Batch API too (``batch_api=True`` on the batch paths).
    """
    # Nothing is returned: a notebook cell ending with the call shows no stray Out.
    spec = {"base_url": base_url, "api_key_env": api_key_env, "api": api, "batch_api": batch_api}
    _registered[name] = make_endpoint(name, spec)


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _plugin(name: str) -> Endpoint | type | None:
    ep = _entry_points().get(name)
    if ep is None:
        return None
    try:
        value = ep.load()
    except Exception as exc:  # a broken plugin names itself, it does not break the others
        raise ConfigurationError(f"The provider plugin {name!r} failed to load: {exc}") from None
    if inspect.isclass(value) and hasattr(value, "create_async_generator"):
        return value
    return make_endpoint(name, value)


def endpoints(extra: Mapping[str, Any] | None = None) -> dict[str, Endpoint]:
    """Every endpoint known: presets, plugins, registered ones, then ``extra`` (the
    ``PizzaMagics.endpoints`` trait); a later one of the same name replaces an earlier."""
    table = dict(PRESETS)
    for name in _entry_points():
        try:
            plugin = _plugin(name)
        except ConfigurationError:
            continue
        if isinstance(plugin, Endpoint):
            table[name] = plugin
    table.update(_registered)
    for name, spec in (extra or {}).items():
        table[name] = make_endpoint(name, spec)
    return table


async def list_providers(
    which: str | None = None, extra: Mapping[str, Any] | None = None, proxy: str | None = None
) -> dict[str, list[str] | str]:
    """Each provider's model ids (``which`` alone, else all), or the one-line reason an
    endpoint could not be asked; the endpoints are asked in parallel. An unknown ``which``
    is a ``ConfigurationError`` listing the providers."""
    import asyncio

    from .providers import anthropic, openai
    from .providers.pizzagpt import Pizzagpt

    listers = {"openai": openai.list_models, "anthropic": anthropic.list_models}

    table = endpoints(extra)
    names = [which] if which else [PIZZAGPT, *table]
    unknown = [n for n in names if n != PIZZAGPT and n not in table]
    if unknown:
        raise ConfigurationError(
            f"no provider named {unknown[0]!r}; providers: {', '.join([PIZZAGPT, *table])}"
        )
    asked = [n for n in names if n != PIZZAGPT]
    found = await asyncio.gather(
        *(
            listers[table[n].api](table[n].url, table[n].api_key_env, name=n, proxy=proxy)
            for n in asked
        )
    )
    listed: dict[str, list[str] | str] = {}
    if PIZZAGPT in names:
        listed[PIZZAGPT] = Pizzagpt.get_models()
    for name, models in zip(asked, found):
        listed[name] = models if isinstance(models, str) else [model_id(name, m) for m in models]
    return listed


def import_provider(path: str) -> type:
    """The provider class at ``package.module.Class``."""
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        value = getattr(module, attribute)
    except ImportError as exc:
        raise ConfigurationError(f"Cannot import the provider {path!r}: {exc}") from None
    except AttributeError:
        raise ConfigurationError(f"{module_name!r} has no provider named {attribute!r}") from None
    if not callable(getattr(value, "create_async_generator", None)):
        raise ConfigurationError(
            f"{path!r} is not a provider class: it has no create_async_generator"
        )
    return value


@dataclass(frozen=True)
class Backend:
    """A resolved model id: the provider that answers and the model it is asked for; for an
    alias, its name and its options (not yet merged into a request's)."""

    provider: str
    model: str
    endpoint: Endpoint | None = None
    cls: Any = field(default=None, compare=False)
    alias: str | None = field(default=None, compare=False)
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        """The model id that names this backend (a Pizzagpt model stands alone)."""
        return model_id(self.provider, self.model)

    @property
    def is_pizzagpt(self) -> bool:
        return self.provider == PIZZAGPT

    @property
    def takes_parameters(self) -> bool:
        """Whether temperature and max_tokens reach the model."""
        return self.endpoint is not None or (self.cls is not None and not self.is_pizzagpt)

    @property
    def takes_options(self) -> bool:
        """Whether model options (``-O KEY=VALUE``) reach the model: backends that send a
        request body of their own making (endpoints: OpenAI-compatible ones and the Messages
        API)."""
        return self.endpoint is not None

    def check_options(self, options: Mapping[str, Any] | None) -> None:
        """A ``ConfigurationError`` when ``options`` are given and this backend takes none."""
        if not options or self.takes_options:
            return
        name = "Pizzagpt" if self.is_pizzagpt else self.provider
        raise ConfigurationError(
            f"{name} takes no model options ({', '.join(sorted(options))}); use a backend "
            "that does (-m ollama:MODEL, -m openai:MODEL, -m anthropic:MODEL, ...), or leave "
            "them out (nothing was sent)"
        )

    @property
    def streams(self) -> bool:
        if self.endpoint is not None:
            return True
        # Pizzagpt's answer arrives whole; a gpt4free class says whether it streams.
        return bool(
            self.cls is not None
            and not self.is_pizzagpt
            and getattr(self.cls, "supports_stream", False)
        )

    @property
    def takes_images(self) -> bool:
        """Whether images in a question reach the model (endpoints: OpenAI-compatible ones and
        the Messages API)."""
        return self.endpoint is not None

    def check_images(self, messages: list[dict[str, Any]], references: str = "") -> None:
        """A ``PromptError`` when ``messages`` hold images and this backend takes none."""
        if self.takes_images or all(type(m.get("content")) is str for m in messages):
            return
        from .errors import PromptError
        from .images import has_images

        if not any(has_images(m.get("content")) for m in messages):
            return
        what = f"{references} is an image" if references else "The question holds an image"
        name = "Pizzagpt" if self.is_pizzagpt else self.provider
        raise PromptError(
            f"{what}, and {name} takes text only; ask a backend that takes images, such as "
            "-m openai:gpt-4o-mini, -m anthropic:claude-sonnet-4-5 or -m ollama:llava "
            "(nothing was sent)"
        )

    def check_parameters(self, temperature: float | None, max_tokens: int | None) -> None:
        """A ``ConfigurationError`` for a parameter this backend would not take."""
        if temperature is None and max_tokens is None:
            return
        given = [
            name
            for name, value in (("temperature", temperature), ("max_tokens", max_tokens))
            if value is not None
        ]
        if given and not self.takes_parameters:
            raise ConfigurationError(
                f"Pizzagpt takes no {' or '.join(given)}; use a backend that does "
                "(-m ollama:MODEL, -m openai:MODEL, ...), or leave it out"
            )

    def _endpoint_options(self) -> dict[str, Any]:
        assert self.endpoint is not None
        return {
            "base_url": self.endpoint.url,
            "api_key_env": self.endpoint.api_key_env,
            "name": self.provider,
        }

    def generate(
        self,
        messages: list[dict[str, Any]],
        *,
        stream: bool = True,
        temperature: float | None = None,
        max_tokens: int | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_retries: int | None = None,
        base_url: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[Any]:
        """The provider's async generator for ``messages``: text chunks and response objects.

        ``base_url`` is Pizzagpt's (``$PIZZAGPT_URL``); endpoints have their own. ``options``
        (canonical, see ``options``) go into the request body of backends that take them.
        """
        self.check_parameters(temperature, max_tokens)
        self.check_options(options)
        request: dict[str, Any] = {
            "timeout": timeout,
            "connect_timeout": connect_timeout,
            "max_retries": max_retries,
        }
        if self.endpoint is not None:
            return self.endpoint.provider.create_async_generator(
                self.model,
                messages,
                proxy=proxy,
                stream=stream,
                temperature=temperature,
                max_tokens=max_tokens,
                options=options,
                **request,
                **self._endpoint_options(),
            )
        if self.is_pizzagpt:
            return self.cls.create_async_generator(
                self.model, messages, proxy=proxy, base_url=base_url, **request
            )
        keywords: dict[str, Any] = {"stream": stream}
        if temperature is not None:
            keywords["temperature"] = temperature
        if max_tokens is not None:
            keywords["max_tokens"] = max_tokens
        if proxy:
            keywords["proxy"] = proxy
        return _foreign(self.cls, self.model, messages, keywords)


async def _foreign(cls: Any, model: str, messages: Any, options: dict[str, Any]) -> Any:
    """A foreign provider class's chunks; its own exceptions become ``ProviderError``."""
    from .errors import PizzagptError

    name = getattr(cls, "__name__", str(cls))
    try:
        result = cls.create_async_generator(model, messages, **options)
        if inspect.isawaitable(result) and not hasattr(result, "__aiter__"):
            result = await result
        async for chunk in result:
            yield chunk
    except PizzagptError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise ProviderError(f"{name} failed: {type(exc).__name__}: {text}") from exc


def _pizzagpt(model: str) -> Backend:
    from .providers.pizzagpt import Pizzagpt

    try:
        return Backend(PIZZAGPT, Pizzagpt.get_model(model), cls=Pizzagpt)
    except ModelNotFoundError as exc:
        exc.args = (f"{exc} (or PROVIDER:MODEL for another backend; see --models)",)
        raise


_resolved: dict[Any, tuple[Backend, tuple[Endpoint, ...]]] = {}


def resolve(model_id: str | None, extra: Mapping[str, Any] | None = None) -> Backend:
    """The backend a model id or a model alias names (see the module's docstring).

    Remembered per model id, endpoint table and registrations, so a question pays for it once;
    the alias table is read again when its file changes.
    """
    if model_id:
        alias = find_alias(model_id)
        if alias is not None:
            backend = _resolve_id(alias.model, extra)
            return replace(backend, alias=alias.name, options=alias.options)
    return _resolve_id(model_id, extra)


def _resolve_id(model_id: str | None, extra: Mapping[str, Any] | None) -> Backend:
    registered = tuple(_registered.values())
    key = (model_id, tuple((k, repr(v)) for k, v in extra.items())) if extra else model_id
    entry = _resolved.get(key)
    # The registrations it was resolved under, compared by identity first (endpoints are
    # immutable, and the entry keeps them alive).
    if entry is None or entry[1] != registered:
        if len(_resolved) > 256:
            _resolved.clear()
        entry = _resolved[key] = (_resolve(model_id, extra), registered)
    return entry[0]


def _resolve(model_id: str | None, extra: Mapping[str, Any] | None) -> Backend:
    text = (model_id or "").strip()
    if not text:
        return _pizzagpt("")
    prefix, sep, rest = text.partition(":")
    if prefix == PIZZAGPT:
        return _pizzagpt(rest)
    table = endpoints(extra)
    if prefix in table:
        if not rest:
            raise ConfigurationError(
                f"Name a model for {prefix}: {prefix}:MODEL (%pizza --models {prefix} lists them)"
            )
        return Backend(prefix, rest, endpoint=table[prefix])
    plugin = _plugin(prefix) if prefix in _entry_points() else None
    if plugin is not None and not isinstance(plugin, Endpoint):
        return Backend(prefix, rest or getattr(plugin, "default_model", ""), cls=plugin)
    if _DOTTED.fullmatch(prefix) and prefix.rsplit(".", 1)[1][:1].isupper():
        cls = import_provider(prefix)
        model = rest or getattr(cls, "default_model", "") or ""
        return Backend(prefix, model, cls=cls)
    if sep and _NAME.fullmatch(prefix) and "." not in prefix:
        raise ConfigurationError(
            f"unknown provider {prefix!r}; providers: {', '.join([PIZZAGPT, *table])} "
            "(or package.module.ProviderClass; register_endpoint adds one)"
        )
    return _pizzagpt(text)


def provider_of(cls: Any, model: str | None = None) -> Backend:
    """The backend for a provider class given directly (``ask(..., provider=Class)``)."""
    from .providers.pizzagpt import Pizzagpt

    if cls is Pizzagpt:
        return _pizzagpt(model or "")
    if isinstance(cls, type) and issubclass(cls, Pizzagpt):
        return Backend(PIZZAGPT, cls.get_model(model), cls=cls)
    if model and callable(getattr(cls, "get_model", None)):
        model = cls.get_model(model)
    name = f"{cls.__module__}.{cls.__qualname__}"
    return Backend(name, model or getattr(cls, "default_model", "") or "", cls=cls)
