"""Loading and unloading the extension on a shell: the magics, the input transformer, the
post-cell hook that keeps ``Err``, and the display hook that keeps ``Fig``."""

from __future__ import annotations

from typing import Any

from .names import CELL_ERRORS, FIGURES
from .parsing import keep_question_marks
from .pizza import PizzaMagics

__all__ = ["ConfigWarning", "load", "unload"]


class ConfigWarning(UserWarning):
    """A configured ``PizzaMagics`` value was rejected; the default is used instead."""


def _drop_rejected_config(shell: Any) -> None:
    """Take out of the shell's config every ``PizzaMagics`` value the traits reject, with a
    warning each: a value ``%config`` refused must not stop the extension from loading."""
    section = getattr(shell, "config", {}).get(PizzaMagics.__name__)
    if not section:
        return
    probe = PizzaMagics()
    # Endpoints first: a configured model may name one of them.
    for name in sorted(section, key=lambda n: n != "endpoints"):
        if not probe.has_trait(name):
            continue  # traitlets itself warns about unknown names
        try:
            setattr(probe, name, section[name])
        except Exception as exc:  # noqa: BLE001 - whatever the trait refused
            import warnings

            del section[name]
            default = probe.trait_defaults(name)
            warnings.warn(
                f"Ignoring the configured PizzaMagics.{name}: {exc}; using {default!r}",
                ConfigWarning,
                stacklevel=3,
            )


def load(shell: Any) -> None:
    """Register the magics on ``shell``; a second load replaces the first."""
    unload(shell)
    _drop_rejected_config(shell)
    configurables = list(shell.configurables)
    try:
        magics = PizzaMagics(shell=shell)
    except BaseException:
        # Magics registers itself as a configurable before it reads its config: leave
        # nothing half-built behind.
        shell.configurables[:] = configurables
        raise
    shell.register_magics(magics)
    shell.input_transformers_cleanup.append(keep_question_marks)
    shell.events.register("post_run_cell", magics.after_cell)
    shell.user_ns.setdefault(CELL_ERRORS, magics.cell_errors)
    register_hook = getattr(shell.display_pub, "register_hook", None)
    if register_hook is not None:  # ipykernel's publisher: figures and images displayed
        register_hook(magics.figure_hook)
    shell.user_ns.setdefault(FIGURES, magics.figures)


def unload(shell: Any) -> None:
    """Undo ``load``: remove the magics and the configurable, close the shared session."""
    shell.input_transformers_cleanup[:] = [
        t
        for t in shell.input_transformers_cleanup
        if getattr(t, "__name__", "") != keep_question_marks.__name__
    ]
    manager = shell.magics_manager
    magics = manager.registry.get(PizzaMagics.__name__)
    if magics is None:
        return
    for kind in ("line", "cell"):
        table = manager.magics[kind]
        for name in magics.magics[kind]:
            if getattr(table.get(name), "__self__", None) is magics:
                del table[name]
    if manager.registry.get(type(magics).__name__) is magics:
        del manager.registry[type(magics).__name__]
    if magics in shell.configurables:
        shell.configurables.remove(magics)
    from ..providers.openai import MAX_ANSWER_CHARS, MAX_EVENT_BYTES, OpenAICompatible

    OpenAICompatible.max_answer_chars = MAX_ANSWER_CHARS
    OpenAICompatible.max_event_bytes = MAX_EVENT_BYTES
    if magics.after_cell in shell.events.callbacks["post_run_cell"]:
        shell.events.unregister("post_run_cell", magics.after_cell)
    if shell.user_ns.get(CELL_ERRORS) is magics.cell_errors:
        del shell.user_ns[CELL_ERRORS]
    if shell.user_ns.get(FIGURES) is magics.figures:
        del shell.user_ns[FIGURES]
    unregister_hook = getattr(shell.display_pub, "unregister_hook", None)
    if unregister_hook is not None:
        try:
            unregister_hook(magics.figure_hook)
        except (KeyError, ValueError):
            pass
    if magics.prices:  # the prices it set go with it
        from ..cost import set_prices

        set_prices(None)
    if magics.batch_discount != 0.5:  # and the batch share
        from ..cost import set_batch_discount

        set_batch_discount(0.5)
    from ..loop import run_sync
    from ..session import close_session

    run_sync(close_session())
