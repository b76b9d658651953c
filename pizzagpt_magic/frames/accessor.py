"""``df.pizza`` and ``s.pizza``: the accessors pandas hands every DataFrame and Series.

They hold the object and pass it, with the caller's options, to the operation's module. This
module is imported when pandas is; the operations' modules (and through them the engine and
aiohttp) only when an operation is first called.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["FramePizza", "SeriesPizza", "register"]

#: The operations ``estimate`` knows, by name.
OPERATIONS = ("map", "filter", "classify", "extract", "agg")


class _Pizza:
    """What both accessors share: the operations, each in a module of its own."""

    def __init__(self, data: Any) -> None:
        self._data = data

    def map(self, template: str, schema: Any = None, **options: Any) -> Any:
        """The model's answer to ``template`` filled with each row: a ``string`` Series on
        the same index, or with ``schema`` a typed DataFrame (one column per field and
        ``_error``). ``options`` are those of ``ask`` (``model``, ``system``,
        ``temperature``, ``max_tokens``, ``concurrency``, ``cache``, ``progress``, ...),
        ``batch_api=True`` (the provider's batch jobs, waited for, picked up again by the same
        call after a restart; every operation takes it) and ``dry_run=True``, which returns
        the ``estimate`` and sends nothing. ``template`` may be a saved prompt
        (``saved("NAME")``): its text, with its settings below the call's."""
        from .map import map_rows
        from .options import with_saved

        template, options, schema = with_saved(template, options, schema)
        return map_rows(self._data, template, schema, options)

    def filter(self, condition: str, *, mask: bool = False, **options: Any) -> Any:
        """The rows for which the model answers yes to ``condition`` (asked as a boolean,
        never read from prose); with ``mask=True`` the ``boolean`` mask itself (``<NA>``
        where the answer failed)."""
        from .filter import filter_rows
        from .options import with_saved

        condition, options, _ = with_saved(condition, options)
        return filter_rows(self._data, condition, mask, options)

    def mask(self, condition: str, **options: Any) -> Any:
        """``filter(condition, mask=True)``: the ``boolean`` Series of yes/no answers."""
        return self.filter(condition, mask=True, **options)

    def classify(self, template: str, labels: Any, **options: Any) -> Any:
        """One of ``labels`` for each row: a ``category`` Series with exactly those
        categories (an answer outside them is repaired when it plainly means one, else asked
        again, else ``<NA>``)."""
        from .classify import classify_rows
        from .options import with_saved

        template, options, _ = with_saved(template, options)
        return classify_rows(self._data, template, labels, options)

    def extract(self, template: str, schema: Any, **options: Any) -> Any:
        """The fields of ``schema`` (a concise spec, a JSON Schema or a Pydantic model) for
        each row, as typed columns on the same index with ``_error``, ready to ``join``."""
        from .extract import extract_rows
        from .options import with_saved

        template, options, schema = with_saved(template, options, schema)
        return extract_rows(self._data, template, schema, options)

    def agg(self, question: str, template: str | None = None, **options: Any) -> Any:
        """One answer to ``question`` about all the rows (each shown with ``template``,
        ``{row}`` by default). Rows that do not fit in one prompt (``max_prompt_chars``) are
        answered in chunks, and the partial answers combined by further questions until one
        remains; the answer says how many rows and chunks it read. ``question`` may be a saved
        prompt (``saved("NAME")``)."""
        from .agg import aggregate
        from .options import with_saved

        question, options, _ = with_saved(question, options)
        return aggregate(self._data, question, template, options)

    def estimate(self, method: str, *args: Any, **options: Any) -> Any:
        """What ``method`` (``"map"``, ``"filter"``, ...) would send with these arguments:
        rows, distinct prompts, prompts already answered in the store, requests and input
        tokens to expect. Sends nothing."""
        if method not in OPERATIONS:
            raise ValueError(f"estimate: unknown method {method!r}; one of {', '.join(OPERATIONS)}")
        return getattr(self, method)(*args, dry_run=True, **options)


class FramePizza(_Pizza):
    """``df.pizza``: semantic operations over a DataFrame's rows. Templates use the columns
    by name (``{review}``), ``{index}`` and ``{row}`` (the whole row)."""


class SeriesPizza(_Pizza):
    """``s.pizza``: semantic operations over a Series' values. Templates use ``{value}``
    and ``{index}``."""

    def agg(self, question: str, template: str | None = None, **options: Any) -> Any:
        """One answer to ``question`` about all the values (see ``DataFrame.pizza.agg``);
        each value is shown with ``template``, ``{value}`` by default."""
        return super().agg(question, template or "{value}", **options)


def register(pandas: ModuleType) -> None:
    """Register the accessors on ``pandas``' DataFrame and Series."""
    import warnings

    from . import ACCESSOR

    extensions = pandas.api.extensions
    with warnings.catch_warnings():
        # A second registration (a reload of the package) replaces the first, which is meant.
        warnings.simplefilter("ignore", UserWarning)
        extensions.register_dataframe_accessor(ACCESSOR)(FramePizza)
        extensions.register_series_accessor(ACCESSOR)(SeriesPizza)
