"""Semantic operations on pandas objects: ``df.pizza`` and ``s.pizza``.

``install()`` (run when the package is imported, so by ``%load_ext pizzagpt_magic`` and by
``import pizzagpt_magic`` alike) makes the accessor appear on every DataFrame and Series without
importing pandas: when pandas is already imported it registers the accessor at once; otherwise a
finder on ``sys.meta_path`` waits for pandas' own import and registers it the moment that import
finishes. The finder looks at one module name and otherwise steps aside, so an import of anything
else pays one string comparison.

Each operation is a module of its own (``map``, ``filter``, ``classify``, ``extract``, ``agg``);
``accessor`` holds the two accessor classes, ``template`` the row templates, ``options`` what
every operation shares (the options of ``ask``, the run through the batch engine, ``estimate``).
None of them sends anything itself: prompts go to the batch engine, answers come back to be put
on the caller's index. Those modules are reached only through the accessor, which exists only once
pandas is imported, so they import pandas at their top; this one never does.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

__all__ = ["ACCESSOR", "install", "installed", "uninstall"]

#: The accessor's name on DataFrames and Series.
ACCESSOR = "pizza"

_registered = False


def installed() -> bool:
    """Whether pandas' DataFrame and Series carry the accessor."""
    return _registered


def _register(pandas: ModuleType) -> None:
    """Register the accessors on an imported pandas (once)."""
    global _registered
    if _registered:
        return
    from .accessor import register

    register(pandas)  # twice (two threads importing pandas at once) would do no harm
    _registered = True


class _PandasHook:
    """A finder that finds nothing itself: for ``pandas`` it asks the other finders, and wraps
    the loader so that the accessor is registered once pandas' module has run. (A plain class:
    ``importlib.abc`` would cost the import it saves.)"""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "pandas":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = cast(Any, _RegisteringLoader(spec.loader))
                return spec
        return None


class _RegisteringLoader:
    """pandas' own loader, then the accessor's registration."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _remove_hook()
        _register(module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self.loader, name)


_hook = _PandasHook()


def _remove_hook() -> None:
    try:
        sys.meta_path.remove(_hook)
    except ValueError:
        pass


def install() -> None:
    """Make ``df.pizza`` and ``s.pizza`` available now if pandas is imported, else as soon as
    it is; imports nothing heavy."""
    if _registered:
        return
    pandas = sys.modules.get("pandas")
    if pandas is not None and hasattr(pandas, "DataFrame"):
        _register(pandas)
    elif _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)


def uninstall() -> None:
    """Take the accessor off pandas' classes and the finder off ``sys.meta_path``."""
    global _registered
    _remove_hook()
    if not _registered:
        return
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        for cls in (pandas.DataFrame, pandas.Series):
            if ACCESSOR in cls.__dict__:
                delattr(cls, ACCESSOR)
            cls._accessors.discard(ACCESSOR)
    _registered = False
