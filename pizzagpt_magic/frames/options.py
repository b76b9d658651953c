"""The options every DataFrame operation takes: those of ``ask``, the batch's, and where their
defaults come from.

In a shell where ``%load_ext pizzagpt_magic`` ran, a default is ``PizzaMagics``' setting (model,
endpoints, system message, temperature, max tokens, concurrency, cache, log, store, progress,
time limits, proxy, value budget, longest prompt), so that a method call asks exactly what
``%%pizza --each`` would and shares its answers; elsewhere it is the Python API's.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any

from ..interpolate import DEFAULT_BUDGET

__all__ = ["Options", "options_of"]

#: The longest prompt when no setting says otherwise (``PizzaMagics.max_prompt_chars``).
DEFAULT_MAX_PROMPT_CHARS = 100_000


@dataclass
class Options:
    """What an operation is asked with. ``None`` leaves a value to the backend (temperature,
    max tokens) or to the transport's default (time limits, retries, proxy)."""

    model: str | None = None
    system: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None
    concurrency: int = 8
    pack: int | str | None = None
    cache: bool = True
    log: bool = True
    store: Any = "default"
    progress: bool = True
    timeout: float | None = None
    connect_timeout: float | None = None
    max_retries: int | None = None
    proxy: str | None = None
    base_url: str | None = None
    provider: Any = None
    endpoints: dict[str, Any] = field(default_factory=dict)
    value_budget: int = DEFAULT_BUDGET
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
    schema_retries: int = 1
    #: Send the rows as the provider's batch jobs (``engine.send.jobs``), and wait for them.
    batch_api: bool = False
    batch_max_requests: int | None = None
    batch_poll: float | None = None
    dry_run: bool = False
    #: Entered around each request (an async context manager factory): a limit shared with
    #: other processes, such as a Dask cluster's (see ``distributed``).
    gate: Any = None
    #: Most the operation may spend, in USD (see ``estimates``); None: no limit of its own.
    max_cost: float | None = None
    context: dict[str, Any] = field(default_factory=lambda: {"source": "frame"})
    #: The shell's ``PizzaMagics`` (its ``budget`` holds here too, its ``spent`` counts this).
    magics: Any = None
    #: The operation's cost limits once made (``estimates.Limits``): one for all its batches.
    limits: Any = None

    def request(self) -> dict[str, Any]:
        """How each request is sent (not part of the cache key)."""
        return {
            "timeout": self.timeout,
            "connect_timeout": self.connect_timeout,
            "max_retries": self.max_retries,
            "proxy": self.proxy,
            "base_url": self.base_url,
            **({"gate": self.gate} if self.gate is not None else {}),
        }


_NAMES = frozenset(f.name for f in dataclasses.fields(Options)) - {
    "endpoints",
    "context",
    "magics",
    "limits",
}


def _magics() -> Any:
    """The ``PizzaMagics`` of the running IPython shell, or None (IPython is not imported
    here when the caller has not)."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return None
    return shell.magics_manager.registry.get("PizzaMagics")


def _defaults() -> Options:
    magics = _magics()
    if magics is None:
        return Options()
    return Options(
        model=magics.model,
        system=magics.system or None,
        temperature=magics.temperature,
        max_tokens=magics.max_tokens,
        concurrency=magics.concurrency,
        pack=getattr(magics, "pack", None),
        cache=magics.cache,
        log=magics.log,
        store=magics._store(),  # the magics' own store (None when off)
        progress=magics.progress,
        timeout=magics.timeout,
        connect_timeout=magics.connect_timeout,
        max_retries=magics.retries,
        proxy=magics.proxy or None,
        base_url=magics.base_url,
        endpoints=dict(magics.endpoints),
        value_budget=magics.value_budget,
        max_prompt_chars=magics.max_prompt_chars,
        schema_retries=getattr(magics, "schema_retries", 1),
        batch_max_requests=getattr(magics, "batch_max_requests", None),
        batch_poll=getattr(magics, "batch_poll", None),
        context=magics._context() | {"source": "frame"},
        magics=magics,
    )


def options_of(given: dict[str, Any]) -> Options:
    """The options in effect: ``given`` over the defaults; an unknown name is a TypeError
    naming it, before anything is sent."""
    unknown = sorted(set(given) - _NAMES)
    if unknown:
        raise TypeError(
            f"unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)}; the options are: {', '.join(sorted(_NAMES))}"
        )
    options = _defaults()
    for name, value in given.items():
        setattr(options, name, value)
    if options.concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if options.max_prompt_chars < 1:
        raise ValueError("max_prompt_chars must be at least 1")
    if options.max_cost is not None and not options.max_cost >= 0:
        raise ValueError("max_cost must be 0 or more dollars")
    return options
