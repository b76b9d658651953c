"""One question: ``%pizza question`` and ``%%pizza`` without ``--each`` (with ``--tools``, the
model may look at the kernel's variables on the way: see ``tools``).

The answer streams into the cell when the backend streams; an interrupt keeps what arrived
in ``_pizza_answer``, and a failure after text arrived keeps that text there too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..errors import AnswerFormatError, PizzagptError
from ..render import Answer, PrintedAnswer
from .names import ANSWER_TEXT
from .tools import toolbox_of

if TYPE_CHECKING:
    from ..chat import Reply
    from .pizza import PizzaMagics


__all__ = ["ask_one"]


def ask_one(magics: PizzaMagics, args: Any, template: str) -> Any:
    from ..loop import run_sync
    from ..progress import Progress
    from ..streaming import StreamView

    toolbox = toolbox_of(magics, args, template)
    prompt = magics._question(template, args)
    system = magics._system(args)
    magics._check_size(prompt, system, args.chat)
    cached = (
        magics.cache
        and not args.no_cache
        and magics.conversation.lookup(
            prompt,
            backend=args.backend,
            system=system,
            chat=args.chat,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            store=magics._store(),
            base_url=magics.base_url,
            tools=toolbox,
            schema=args.schema,
            options=args.model_options,
        )
    )
    if not cached:
        magics._check_budget(args, prompt, system)
    notebook = magics._showing_progress()
    view: StreamView | None = None
    # An answer with a schema is data: it shows once it is whole and checked.
    streams = args.backend.streams and args.schema is None
    if magics.stream and not args.no_stream and streams and not cached:
        view = StreamView(notebook=notebook)
    progress = Progress(args.model, enabled=notebook and not cached)

    def on_text(chunk: str) -> None:
        assert view is not None
        if not view.chunks:
            progress.stop()  # the answer itself now shows that it is coming
        view.on_text(chunk)

    ask_prompt = magics._asker(args, on_text if view is not None else None, toolbox)

    async def ask() -> Reply:
        async with progress:
            return await ask_prompt(prompt, system)

    try:
        reply = run_sync(ask())
        printed = (  # a terminal has shown the text as it came: not printed again
            view is not None
            and not notebook
            and bool(view.chunks)
            and args.format in ("markdown", "text")
        )
        if args.schema is not None:
            from ..typed import TypedAnswer

            assert reply.completion is not None
            answer: Answer = TypedAnswer(
                reply.text,
                reply.completion.value,
                args.schema,
                model=args.model,
                cached=reply.cached,
                completion=reply.completion,
            )
        else:
            answer = (PrintedAnswer if printed else Answer)(
                reply.text,
                format=args.format,
                model=args.model,
                cached=reply.cached,
                completion=reply.completion,
            )
    except KeyboardInterrupt:
        if view is not None and view.chunks:
            # What arrived stays: on screen, marked, and in _pizza_answer; the
            # conversation records nothing.
            view.stop("interrupted: the answer is incomplete")
            magics.user_ns[ANSWER_TEXT] = view.text
        raise
    except AnswerFormatError as exc:
        # The model answered, just not in the format asked for: keep what it said.
        if view is not None:
            view.finish(magics.ipython.events)
        magics.user_ns[ANSWER_TEXT] = exc.text
        raise UsageError(f"{exc}; the answer's text is in {ANSWER_TEXT!r}") from None
    except PizzagptError as exc:
        if exc.partial:
            if view is not None:
                view.stop(f"cut off: {exc}")
            magics.user_ns[ANSWER_TEXT] = exc.partial
            raise UsageError(f"{exc}; the partial answer is in {ANSWER_TEXT!r}") from None
        raise UsageError(str(exc)) from None
    if view is not None:
        view.finish(magics.ipython.events)
    magics.conversation.record(prompt, reply.text, args.model, args.backend.provider)
    if args.output:
        magics.user_ns[args.output] = answer.value
    if args.insert:
        # Jupyter frontends open a new cell below holding the text; terminal IPython
        # pre-fills the next prompt with it.
        magics.ipython.set_next_input(answer.cell_code.rstrip("\n"), replace=False)
    return answer
