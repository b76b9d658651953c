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
    from ..streaming import LiveOutput, StreamView

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
    # One output shows the wait, the answer as it arrives and the finished answer; a
    # silenced question (a trailing ";") shows none of them.
    # With an answer file the saved outputs must not change from run to run, and a rerun
    # answers from the file: so the answer is the cell's result, never a live output.
    from .. import answers as answer_files

    in_file = answer_files.current() is not None
    shows_live = notebook and not cached and not in_file and not getattr(args, "silenced", False)
    live = LiveOutput() if shows_live else None
    view: StreamView | None = None
    # An answer with a schema is data: it shows once it is whole and checked.
    streams = args.backend.streams and args.schema is None
    shows_stream = not cached and (live is not None or not notebook)  # a terminal prints it
    if magics.stream and not args.no_stream and streams and shows_stream:
        view = StreamView(notebook=notebook, output=live)
    progress = Progress(args.model, live)

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
        elif live is not None:
            live.note(f"interrupted after {progress.seconds:.1f} s: no answer")
        raise
    except AnswerFormatError as exc:
        # The model answered, just not in the format asked for: keep what it said (the
        # display keeps the text as it arrived).
        if view is not None and view.chunks:
            view.stop(f"not {args.format}")
        elif live is not None:
            live.note(f"the answer is not {args.format}")
        magics.user_ns[ANSWER_TEXT] = exc.text
        raise UsageError(f"{exc}; the answer's text is in {ANSWER_TEXT!r}") from None
    except PizzagptError as exc:
        if exc.partial:
            if view is not None:
                view.stop("incomplete")
            magics.user_ns[ANSWER_TEXT] = exc.partial
            raise UsageError(f"{cut_reason(exc)}; what arrived is in {ANSWER_TEXT!r}") from None
        if live is not None:
            live.note(f"no answer after {progress.seconds:.1f} s")
        raise UsageError(str(exc)) from None
    if view is not None:
        view.finish()
    magics.conversation.record(prompt, reply.text, args.model, args.backend.provider)
    if args.output:
        magics.user_ns[args.output] = answer.value
    if live is not None:
        live.end_with(answer, magics.ipython.events)
    if args.insert:
        insert_code(magics, answer)
    return answer


def cut_reason(exc: PizzagptError) -> str:
    """Why an answer stopped after it had begun, in a reader's words (the transport's
    details stay in the log)."""
    from ..errors import ConnectionLostError, RequestTimeoutError

    size = f"{len(exc.partial):,} characters"
    if isinstance(exc, ConnectionLostError):
        return f"The answer was cut off after {size}: the connection to the server was lost"
    if isinstance(exc, RequestTimeoutError):
        return f"The answer stopped after {size}: no more text came within the time limit"
    return f"The answer stopped after {size}: {exc}"


def insert_code(magics: PizzaMagics, answer: Answer) -> None:
    """The answer's code in a new cell below (Jupyter) or the next prompt (terminal).

    An answer with no code opens nothing (a one-line note says so). A cell run again (Restart
    and Run All) does not open the same code again: the store remembers which code was opened
    below which cell of which notebook (the kernel knows its notebook through its session, and
    the cell by the id JupyterLab sends with it)."""
    import hashlib

    if not answer.has_code and answer.shown_as != "code":  # -f code: all of it is code
        print("The answer holds no code: no cell was inserted.")
        return
    code = answer.cell_code.rstrip("\n")
    where = magics._where()
    if where is not None:
        digest = hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()
        seen = (*where, digest)
        store = magics._store()
        if seen in magics.inserted or (store is not None and store.was_inserted(*seen)):
            return  # opened below this cell by an earlier run
        magics.inserted.add(seen)
        if store is not None:
            store.mark_inserted(*seen)
    magics.ipython.set_next_input(code, replace=False)
