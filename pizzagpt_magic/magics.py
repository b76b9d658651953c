"""``%pizza`` and ``%%pizza``: option parsing and configuration over the core.

Everything the magics do is done by the core modules (``chat``, ``interpolate``, ``render``,
``batch``, ``loop``); this module parses options, turns expected failures into one-line
``UsageError``s and returns an object to display.
"""

from __future__ import annotations

import keyword
import re
import shlex
import time
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, TraitError, Unicode, validate

from .cell_errors import CellErrors
from .errors import AnswerFormatError, PizzagptError
from .render import FORMATS, Answer, BatchSummary, Markup, PrintedAnswer, SafeMarkdown, escape

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from IPython.core.interactiveshell import InteractiveShell

    from .chat import Conversation, Reply

__all__ = ["PizzaMagics", "load", "unload"]

# Where an answer goes when a cell fails after the service answered: the text of an answer
# that is not in the format asked for, and the answers of a batch with failed items.
ANSWER_TEXT = "_pizza_answer"
BATCH_ANSWERS = "_pizza_batch"
# The errors of earlier cells, for {Err[n]} in questions (see cell_errors).
CELL_ERRORS = "Err"
# The images cells displayed, for {Fig[-1]} in questions (see images).
FIGURES = "Fig"

_TOKEN = re.compile(r"""(?:"(?:\\.|[^"\\])*"?|'[^']*'?|\S)+""")
_NUMBER = re.compile(r"-\d|-\.\d")


def _is_pandas(value: Any) -> bool:
    return type(value).__module__.startswith("pandas") and hasattr(value, "index")


def _value_of(text: str, format: str) -> Any:
    """What ``-f format`` makes of an answer (its code, its JSON value), or the error saying
    why it cannot."""
    try:
        return Answer(text, format=format).value
    except AnswerFormatError as exc:
        return exc


def split_options(line: str, option_actions: dict[str, Any]) -> tuple[str, str]:
    """Split ``line`` into its leading options and the prompt after them, kept verbatim.

    Options end at the first word that is not an option (or at ``--``), so quotes and
    apostrophes in the prompt need no escaping.
    """
    end = 0
    expect_value = False
    for match in _TOKEN.finditer(line):
        token = match.group(0)
        if expect_value:
            expect_value = False
            end = match.end()
            continue
        if token == "--":
            return line[: match.start()], line[match.end() :].strip()
        if not token.startswith("-") or token == "-" or _NUMBER.match(token):
            break
        name, has_value = token.split("=", 1)[0], "=" in token
        action = option_actions.get(name)
        if action is None and not token.startswith("--"):
            action = option_actions.get(token[:2])
            has_value = has_value or len(token) > 2
        if action is not None and action.nargs != 0 and not has_value:
            expect_value = True
        end = match.end()
    return line[:end], line[end:].strip()


@magics_class
class PizzaMagics(Magics):
    """Ask the Pizzagpt model from IPython: ``%pizza`` (line) and ``%%pizza`` (cell)."""

    model = Unicode(
        "gpt-4o-mini",
        help="Model used when -m/--model is not given: a Pizzagpt model (gpt-4o-mini), "
        "PROVIDER:MODEL (ollama:llama3.2, openai:gpt-4o-mini, a name in endpoints) or "
        "package.module.ProviderClass[:MODEL].",
    ).tag(config=True)
    endpoints = Dict(
        help="OpenAI-compatible endpoints added to the presets (openai, ollama, lmstudio, "
        'llamacpp, openrouter): {"name": {"base_url": "http://host:port/v1", "api_key_env": '
        '"VARIABLE"}}; a same name replaces a preset. Keys are read from the variables only.',
    ).tag(config=True)
    temperature = Float(
        None, allow_none=True, help="Sampling temperature; None leaves it to the backend."
    ).tag(config=True)
    max_tokens = Int(
        None, allow_none=True, help="Longest answer in tokens; None leaves it to the backend."
    ).tag(config=True)
    stream = Bool(
        True, help="Show answers of backends that stream (OpenAI-compatible) as they arrive."
    ).tag(config=True)
    format = CaselessStrEnum(
        FORMATS,
        default_value="markdown",
        help="How answers are shown when -f/--format is not given: markdown, text, code or json.",
    ).tag(config=True)
    system = Unicode(
        "", help="System message sent with every question unless -s/--system replaces it."
    ).tag(config=True)
    base_url = Unicode(
        None,
        allow_none=True,
        help="Base URL of the service; None means $PIZZAGPT_URL, else https://www.pizzagpt.it.",
    ).tag(config=True)
    timeout = Float(60.0, help="Seconds one request may take (each retry has its own).").tag(
        config=True
    )
    connect_timeout = Float(10.0, help="Seconds allowed for making a connection.").tag(config=True)
    retries = Int(3, help="Retries on 429, 502, 503, 504 and connection failures (0 to 10).").tag(
        config=True
    )
    proxy = Unicode(
        None,
        allow_none=True,
        help="Proxy URL (http:// or https://); None means the standard proxy variables.",
    ).tag(config=True)
    cache = Bool(
        True, help="Answer a repeated identical question from memory, else from the store."
    ).tag(config=True)
    cache_size = Int(128, help="How many answers the memory cache keeps (at least 1).").tag(
        config=True
    )
    store = Unicode(
        None,
        allow_none=True,
        help="Path of the SQLite store that keeps answers across kernels (cache and log); "
        "None means the default file in the user data directory, '' turns the store off. "
        "$PIZZAGPT_STORE, when set, wins.",
    ).tag(config=True)
    cache_max_mb = Float(200.0, help="Size limit of the store's cache, in MB.").tag(config=True)
    log = Bool(
        True, help="Append every exchange to the store's log (also off with PIZZAGPT_LOG=0)."
    ).tag(config=True)
    history_length = Int(
        20, help="How many exchanges the conversation keeps for -c/--chat (0 keeps none)."
    ).tag(config=True)
    interpolate = Bool(
        True, help="Replace {name}, {name.attr} and {name[key]} in prompts with values."
    ).tag(config=True)
    progress = Bool(
        True, help="Show a live placeholder while waiting, and a progress bar for --each."
    ).tag(config=True)
    value_budget = Int(
        4000, help="Characters an interpolated value may take in a prompt; tables are summarised."
    ).tag(config=True)
    max_prompt_chars = Int(
        100_000, help="Longest prompt (all messages) sent; a longer one is refused."
    ).tag(config=True)
    concurrency = Int(8, help="Requests in flight at once for --each batches.").tag(config=True)
    image_max_side = Int(
        1024, help="Images in questions are scaled down to at most this many pixels a side."
    ).tag(config=True)
    image_max_bytes = Int(
        4_000_000, help="Largest image (as PNG, after scaling) a question may send, in bytes."
    ).tag(config=True)
    fix_prompt = Unicode(
        "This notebook cell failed.\n\nThe cell:\n```python\n{source}\n```\n\n"
        "The error:\n```\n{error}\n```\n\n"
        "Explain the cause in a sentence or two. Then give the whole corrected cell as one "
        "Python code block.",
        help="The question --fix asks; {source} is the failing cell's code, {error} its error.",
    ).tag(config=True)

    @validate("model")
    def _valid_model(self, proposal: Any) -> str:
        from .backends import resolve

        try:
            return resolve(proposal.value, self.endpoints).id
        except PizzagptError as exc:
            raise TraitError(str(exc)) from None

    @validate("endpoints")
    def _valid_endpoints(self, proposal: Any) -> dict[str, Any]:
        from .backends import make_endpoint

        try:
            for name, spec in proposal.value.items():
                make_endpoint(name, spec)
        except PizzagptError as exc:
            raise TraitError(str(exc)) from None
        return proposal.value

    @validate("temperature")
    def _valid_temperature(self, proposal: Any) -> float | None:
        if proposal.value is not None and not 0 <= proposal.value <= 2:
            raise TraitError("temperature must be from 0 to 2")
        return proposal.value

    @validate("max_tokens")
    def _valid_max_tokens(self, proposal: Any) -> int | None:
        if proposal.value is not None and proposal.value < 1:
            raise TraitError("max_tokens must be at least 1")
        return proposal.value

    @validate("base_url", "proxy")
    def _valid_url(self, proposal: Any) -> str | None:
        from .transport import check_url

        if proposal.value is None:
            return None
        try:
            return check_url(proposal.value, f"PizzaMagics.{proposal.trait.name}")
        except PizzagptError as exc:
            raise TraitError(str(exc)) from None

    @validate("timeout", "connect_timeout")
    def _valid_seconds(self, proposal: Any) -> float:
        if not proposal.value > 0:
            raise TraitError(f"{proposal.trait.name} must be more than 0 seconds")
        return proposal.value

    @validate("retries")
    def _valid_retries(self, proposal: Any) -> int:
        if not 0 <= proposal.value <= 10:
            raise TraitError("retries must be from 0 to 10")
        return proposal.value

    @validate("fix_prompt")
    def _valid_fix_prompt(self, proposal: Any) -> str:
        try:
            proposal.value.format(source="", error="")
        except (KeyError, IndexError, ValueError) as exc:
            raise TraitError(
                "fix_prompt may hold only {source} and {error} (write {{ and }} for braces): "
                f"{exc!r}"
            ) from None
        if "{source}" not in proposal.value or "{error}" not in proposal.value:
            raise TraitError("fix_prompt needs both {source} and {error}")
        return proposal.value

    @validate("image_max_side", "image_max_bytes")
    def _valid_image_limits(self, proposal: Any) -> int:
        if proposal.value < 16:
            raise TraitError(f"{proposal.trait.name} must be at least 16")
        return proposal.value

    @validate("cache_size", "concurrency", "value_budget", "max_prompt_chars")
    def _valid_positive(self, proposal: Any) -> int:
        if proposal.value < 1:
            raise TraitError(f"{proposal.trait.name} must be at least 1")
        return proposal.value

    @validate("history_length")
    def _valid_history(self, proposal: Any) -> int:
        if proposal.value < 0:
            raise TraitError("history_length must be 0 or more")
        return proposal.value

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._conversation: Conversation | None = None
        #: The errors of earlier cells, kept by ``after_cell`` (``load`` registers it).
        self.cell_errors = CellErrors(
            code_name=getattr(getattr(shell, "compile", None), "format_code_name", None)
        )
        self.observe(self._resize, names=["history_length", "cache_size"])
        from .images import DisplayedImages

        #: The images cells displayed, newest last (``load`` hooks it to the display publisher).
        self.figures = DisplayedImages()
        self.figure_hook = self.figures.hook(lambda: getattr(shell, "execution_count", None))

    @property
    def ipython(self) -> InteractiveShell:
        """The shell the magics belong to."""
        assert self.shell is not None, "PizzaMagics needs a shell"
        return self.shell

    @property
    def user_ns(self) -> dict[str, Any]:
        """The namespace of the shell the magics belong to."""
        return self.ipython.user_ns

    @property
    def conversation(self) -> Conversation:
        """The history and the answer cache, made on first use."""
        if self._conversation is None:
            from .chat import Conversation

            self._conversation = Conversation(self.history_length, self.cache_size)
        return self._conversation

    def after_cell(self, result: Any) -> None:
        """``post_run_cell`` callback: record the cell's error, and bring ``Err`` and ``Fig``
        back into a namespace that ``%reset`` emptied."""
        self.cell_errors.record(result)
        self.user_ns.setdefault(CELL_ERRORS, self.cell_errors)
        self.user_ns.setdefault(FIGURES, self.figures)

    def _resize(self, change: Any) -> None:
        if self._conversation is not None:
            self._conversation.resize(max_exchanges=self.history_length, cache_size=self.cache_size)

    # -- the magic ------------------------------------------------------------------------------

    @magic_arguments()
    @argument(
        "-m",
        "--model",
        help="Model to ask: gpt-4o-mini, PROVIDER:MODEL (ollama:llama3.2) or "
        "package.module.Provider[:MODEL] (see --models).",
    )
    @argument(
        "-f",
        "--format",
        type=str.lower,
        choices=FORMATS,
        help="Show the answer as markdown (default), text, code or json.",
    )
    @argument(
        "-o",
        "--output",
        metavar="NAME",
        help="Also store the answer in this variable: the text, or the code (-f code) "
        "or the parsed value (-f json).",
    )
    @argument("-s", "--system", metavar="TEXT", help="System message for this question.")
    @argument(
        "-c",
        "--chat",
        action="store_true",
        help="Continue the conversation: earlier exchanges go with the question.",
    )
    @argument("--reset", action="store_true", help="Forget the conversation first.")
    @argument("--history", action="store_true", help="Show the conversation so far.")
    @argument(
        "--models",
        nargs="?",
        const="",
        metavar="PROVIDER",
        help="List the models of every provider (asking each endpoint), or of PROVIDER.",
    )
    @argument("--temperature", type=float, metavar="T", help="Sampling temperature (0 to 2).")
    @argument("--max-tokens", type=int, metavar="N", help="Longest answer in tokens.")
    @argument(
        "--no-stream", action="store_true", help="Show the answer when complete, not as it arrives."
    )
    @argument("--timeout", type=float, metavar="SECONDS", help="Time limit for this question.")
    @argument("--proxy", metavar="URL", help="Proxy for this question.")
    @argument("--no-cache", action="store_true", help="Ask again even if answered before.")
    @argument("--no-log", action="store_true", help="Keep this exchange out of the log.")
    @argument(
        "--log",
        nargs="?",
        const=10,
        type=int,
        metavar="N",
        dest="show_log",
        help="Show the newest N logged exchanges (default 10).",
    )
    @argument(
        "--no-interpolate",
        action="store_true",
        help="Send {braces} as they are, without substituting variables.",
    )
    @argument(
        "--each",
        metavar="NAME",
        help="Cell magic: ask the question once per item of the iterable NAME, with "
        "{item} and {index} bound; answers go to -o as a list (a Series for pandas).",
    )
    @argument("--concurrency", type=int, metavar="N", help="Requests in flight for --each.")
    @argument(
        "--fix",
        action="store_true",
        help="Ask about the newest error (or cell N's: --fix N): the failing cell's code and "
        "its error go with an instruction to explain it and correct the cell, which opens "
        "below. Text after it is added to the question.",
    )
    @argument(
        "--insert",
        action="store_true",
        help="Also put the answer's code in a new cell below, ready to run: its Python code "
        "blocks (or all its blocks, or all of it when it has none).",
    )
    @no_var_expand
    @line_cell_magic
    def pizza(self, line: str, cell: str | None = None) -> Any:
        """Ask the Pizzagpt model; the answer is shown as Markdown.

        Line: ``%pizza [options] question``. Cell: ``%%pizza [options]`` with the question as
        the cell body. ``{name}``, ``{name.attr}`` and ``{name[key]}`` insert values from the
        namespace (``{{`` and ``}}`` are literal braces); ``{In[n]}``, ``{Out[n]}`` and
        ``{Err[n]}`` quote cell n's source, result and error (``{Err[-1]}``: the newest error).
        """
        parser = self.pizza.parser
        options, prompt = split_options(line, parser._option_string_actions)
        try:
            argv = shlex.split(options)
        except ValueError as exc:
            raise UsageError(f"Cannot read the options {options!r}: {exc}") from None
        if "-h" in argv or "--help" in argv:
            # The usage, as %pizza? shows it (the parser has no help option of its own).
            self.ipython.run_line_magic("pinfo", "%pizza")
            return None
        args = parser.parse_args(argv)
        if cell is not None:
            if prompt:
                raise UsageError(
                    f"Unexpected text on the %%pizza line: {prompt!r}; the question goes in the "
                    "cell body (use -- before a prompt that starts with '-')"
                )
            prompt = cell
        # A trailing ";" silences the output, as for any IPython expression; it is not asked.
        # (IPython's @output_can_be_silenced would find it by tokenizing the question as
        # Python, which fails on ordinary text such as "(see #3)" after the answer came.)
        prompt = prompt.strip()
        silenced = prompt.endswith(";")
        if silenced:
            prompt = prompt[:-1].rstrip()
        self._check_args(args)
        if args.reset:
            forgotten = self.conversation.reset()
            if not prompt and not args.each:
                print(f"Conversation cleared ({forgotten} exchanges forgotten).")
                return None
        if args.models is not None or args.history or args.show_log is not None:
            if prompt:
                raise UsageError("--models, --history and --log take no question")
            if args.show_log is not None:
                return self._log(args.show_log)
            return self._models(args) if args.models is not None else self._history()
        if args.fix:
            if args.each:
                raise UsageError("--fix asks about one error; it does not go with --each")
            prompt = self._fix_question(prompt, args)
        if args.each:
            if cell is None:
                raise UsageError("--each works with the %%pizza cell magic")
            if args.insert:
                raise UsageError(
                    "--insert puts one answer's code in a cell; it does not go with --each"
                )
            result = self._ask_each(args, prompt)
        elif not prompt:
            raise UsageError(
                "Nothing to ask: the question is empty. Usage: %pizza [options] question"
            )
        else:
            result = self._ask_one(args, prompt)
        return None if silenced else result

    # -- helpers --------------------------------------------------------------------------------

    def _check_args(self, args: Any) -> None:
        if args.output is not None and (
            not args.output.isidentifier() or keyword.iskeyword(args.output)
        ):
            raise UsageError(f"-o/--output needs a variable name, not {args.output!r}")
        if args.timeout is not None and not args.timeout > 0:
            raise UsageError("--timeout must be more than 0 seconds")
        if args.concurrency is not None and args.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if args.proxy is not None:
            from .transport import check_url

            try:
                check_url(args.proxy, "--proxy")
            except PizzagptError as exc:
                raise UsageError(str(exc)) from None
        if args.temperature is not None and not 0 <= args.temperature <= 2:
            raise UsageError("--temperature must be from 0 to 2")
        if args.max_tokens is not None and args.max_tokens < 1:
            raise UsageError("--max-tokens must be at least 1")
        if args.temperature is None:
            args.temperature = self.temperature
        if args.max_tokens is None:
            args.max_tokens = self.max_tokens
        from .backends import resolve

        try:
            args.backend = resolve(args.model or self.model, self.endpoints)
            if args.models is None and not args.history:
                args.backend.check_parameters(args.temperature, args.max_tokens)
        except PizzagptError as exc:
            raise UsageError(str(exc)) from None
        args.model = args.backend.id
        args.format = args.format or self.format.lower()

    def _render(self, template: str, args: Any, namespace: Any = None) -> str:
        """A system message (or any text) with its references replaced; no images."""
        rendered = self._question(template, args, namespace)
        if isinstance(rendered, list):
            raise UsageError("Images go in the question, not in the system message (-s)")
        return rendered

    def _question(self, template: str, args: Any, namespace: Any = None) -> Any:
        """The question with its references replaced: text, or content parts (text and
        ``image_url``) when a reference is an image, each image where it stood."""
        if args.no_interpolate or not self.interpolate:
            return template
        from .images import is_image, prepare
        from .interpolate import format_value, interpolate

        images: list[Any] = []

        def image(value: Any, reference: str) -> str | None:
            if not is_image(value):
                return None
            images.append((value, reference))
            return f"\x00{len(images) - 1}\x00"

        try:
            text = interpolate(
                template,
                namespace if namespace is not None else self.user_ns,
                lambda value: format_value(value, self.value_budget),
                image,
            )
            if not images:
                return text
            references = ", ".join(reference for _, reference in images)
            args.backend.check_images([{"content": [{"type": "image_url"}]}], references)
            parts: list[dict[str, Any]] = []
            for number, piece in enumerate(re.split(r"\x00(\d+)\x00", text)):
                if number % 2:
                    value, reference = images[int(piece)]
                    prepared = prepare(value, reference, self.image_max_side, self.image_max_bytes)
                    parts.append(prepared.part())
                elif piece:
                    parts.append({"type": "text", "text": piece})
            return parts
        except PizzagptError as exc:
            raise UsageError(str(exc)) from None

    def _request_options(self, args: Any) -> dict[str, Any]:
        return {
            "timeout": args.timeout or self.timeout,
            "connect_timeout": self.connect_timeout,
            "max_retries": self.retries,
            "proxy": args.proxy or self.proxy,
            "base_url": self.base_url,
        }

    def _system(self, args: Any, namespace: Any = None) -> str | None:
        """The system message for these options, interpolated in ``namespace``."""
        template = args.system if args.system is not None else self.system
        return self._render(template, args, namespace) or None

    def _asker(
        self, args: Any, on_text: Callable[[str], Any] | None = None
    ) -> Callable[[str, str | None], Awaitable[Reply]]:
        """A coroutine function asking one prompt, with a system message, through the
        conversation (and its cache) with these options; ``on_text`` (a stream) gets the text
        as it arrives."""
        use_cache = self.cache and not args.no_cache
        request = self._request_options(args)
        store = self._store()
        context = self._context()

        async def ask(prompt: str, system: str | None) -> Reply:
            return await self.conversation.ask(
                prompt,
                backend=args.backend,
                system=system,
                chat=args.chat,
                use_cache=use_cache,
                temperature=args.temperature,
                max_tokens=args.max_tokens,
                stream=on_text is not None,
                on_text=on_text,
                store=store,
                log=self.log and not args.no_log,
                context=context,
                **request,
            )

        return ask

    def _store(self) -> Any:
        """The store in effect (None when off or failed)."""
        from .store import get_store

        return get_store(self.store, cache_max_mb=self.cache_max_mb)

    def _context(self) -> dict[str, Any]:
        """Where a question is asked, for the log: this kernel's session and the cell."""
        shell = self.ipython
        kernel = getattr(shell, "kernel", None)
        session = getattr(getattr(kernel, "session", None), "session", None)
        if session is None:
            history = getattr(shell, "history_manager", None)
            number = getattr(history, "session_number", None)
            session = f"ipython-{number}" if number else None
        return {"source": "magic", "session": session, "cell": shell.execution_count}

    def _check_size(self, prompt: Any, system: str | None, chat: bool) -> None:
        from .images import content_text

        try:
            messages = self.conversation.messages(prompt, system=system, chat=chat)
        except PizzagptError as exc:
            raise UsageError(str(exc)) from None
        size = sum(len(content_text(m["content"])) for m in messages)
        if size > self.max_prompt_chars:
            raise UsageError(
                f"The prompt is {size:,} characters, over the limit of {self.max_prompt_chars:,} "
                "(PizzaMagics.max_prompt_chars); shorten it or interpolate less"
            )

    def _showing_progress(self) -> bool:
        return self.progress and getattr(self.shell, "kernel", None) is not None

    def _ask_one(self, args: Any, template: str) -> Any:
        from .loop import run_sync
        from .progress import Progress
        from .streaming import StreamView

        prompt = self._question(template, args)
        system = self._system(args)
        self._check_size(prompt, system, args.chat)
        cached = (
            self.cache
            and not args.no_cache
            and self.conversation.lookup(
                prompt,
                backend=args.backend,
                system=system,
                chat=args.chat,
                temperature=args.temperature,
                max_tokens=args.max_tokens,
                store=self._store(),
                base_url=self.base_url,
            )
        )
        notebook = self._showing_progress()
        view: StreamView | None = None
        if self.stream and not args.no_stream and args.backend.streams and not cached:
            view = StreamView(notebook=notebook)
        progress = Progress(args.model, enabled=notebook and not cached)

        def on_text(chunk: str) -> None:
            assert view is not None
            if not view.chunks:
                progress.stop()  # the answer itself now shows that it is coming
            view.on_text(chunk)

        ask_prompt = self._asker(args, on_text if view is not None else None)

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
                self.user_ns[ANSWER_TEXT] = view.text
            raise
        except AnswerFormatError as exc:
            # The model answered, just not in the format asked for: keep what it said.
            if view is not None:
                view.finish(self.ipython.events)
            self.user_ns[ANSWER_TEXT] = exc.text
            raise UsageError(f"{exc}; the answer's text is in {ANSWER_TEXT!r}") from None
        except PizzagptError as exc:
            if exc.partial:
                if view is not None:
                    view.stop(f"cut off: {exc}")
                self.user_ns[ANSWER_TEXT] = exc.partial
                raise UsageError(f"{exc}; the partial answer is in {ANSWER_TEXT!r}") from None
            raise UsageError(str(exc)) from None
        if view is not None:
            view.finish(self.ipython.events)
        self.conversation.record(prompt, reply.text, args.model, args.backend.provider)
        if args.output:
            self.user_ns[args.output] = answer.value
        if args.insert:
            # Jupyter frontends open a new cell below holding the text; terminal IPython
            # pre-fills the next prompt with it.
            self.ipython.set_next_input(answer.cell_code.rstrip("\n"), replace=False)
        return answer

    def _ask_each(self, args: Any, template: str) -> Any:
        from collections import ChainMap

        from .batch import ask_many_async
        from .interpolate import batch_items
        from .loop import run_sync

        if not template:
            raise UsageError("Nothing to ask: the cell body is empty")
        name = args.each
        if name not in self.user_ns:
            raise UsageError(f"--each: name {name!r} is not defined")
        source = self.user_ns[name]
        try:
            labels, items = batch_items(source)
        except TypeError as exc:
            raise UsageError(f"--each: {name!r} is not iterable ({exc})") from None
        if not items:
            raise UsageError(f"--each: {name!r} is empty")
        # {item} and {index} are bound for the question and the system message alike.
        scopes = [
            ChainMap({"item": item, "index": label}, self.user_ns)
            for label, item in zip(labels, items)
        ]
        requests = [(self._question(template, args, s), self._system(args, s)) for s in scopes]
        for prompt, system in requests:
            self._check_size(prompt, system, args.chat)
        ask_prompt = self._asker(args)

        async def ask_one(request: tuple[str, str | None]) -> str:
            return (await ask_prompt(*request)).text

        started = time.monotonic()
        received: list[Any] = [None] * len(requests)
        try:
            results = run_sync(
                ask_many_async(
                    requests,
                    concurrency=args.concurrency or self.concurrency,
                    errors="return",
                    progress=self.progress,
                    ask=ask_one,
                    into=received,
                )
            )
        except KeyboardInterrupt:
            # Every answer that arrived is kept: in the variable, None where none came (and
            # in the store, so that a rerun asks only for the rest).
            kept = [None if isinstance(r, BaseException) else r for r in received]
            target = args.output or BATCH_ANSWERS
            self.user_ns[target] = self._batch_values(kept, source)
            count = sum(r is not None for r in kept)
            import sys

            print(
                f"Interrupted: {count} of {len(kept)} answers kept in {target!r} (None where "
                "none came); run the cell again to ask only for the rest",
                file=sys.stderr,
            )
            raise
        if args.format in ("code", "json"):  # each answer becomes its value, or fails
            results = [
                result if isinstance(result, BaseException) else _value_of(result, args.format)
                for result in results
            ]
        summary = BatchSummary(labels, results, time.monotonic() - started, args.model)
        answers = self._batch_values(
            [None if isinstance(r, BaseException) else r for r in results], source
        )
        summary.answers = answers
        target = args.output or (BATCH_ANSWERS if summary.failures else None)
        if target:
            self.user_ns[target] = answers
        if summary.failures:
            raise UsageError(f"{summary.failure_line()}; the other answers are in {target!r}")
        return summary

    def _fix_question(self, extra: str, args: Any) -> str:
        """The --fix question: the failing cell's code, its error, the instruction, and
        ``extra`` (after an optional cell number)."""
        number: int | None = None
        first, _, rest = extra.partition(" ")
        if re.fullmatch(r"-?\d+", first):
            number, extra = int(first), rest.strip()
        errors = self.cell_errors
        if not len(errors):
            raise UsageError(
                "No error recorded yet: --fix asks about the newest error of a cell (Err)"
            )
        try:
            error = errors[number if number is not None else -1]
        except KeyError as exc:
            raise UsageError(f"--fix {number}: {exc.args[0]}") from None
        count = number if number is not None and number > 0 else list(errors)[number or -1]
        inputs = self.user_ns.get("In") or []
        source = inputs[count] if 0 < count < len(inputs) else ""
        if not source:
            raise UsageError(f"--fix: the source of cell {count} is not in In")
        question = self.fix_prompt.format(source=source.rstrip("\n"), error=error)
        if extra:
            # The added text may use {references}; the cell and the error are sent as they are.
            question += "\n\n" + self._render(extra, args)
        args.no_interpolate = True
        args.insert = True
        return question

    @staticmethod
    def _batch_values(answers: list[Any], source: Any) -> Any:
        """A batch's answers as the ``-o`` value: a list, or a Series on a pandas index."""
        if _is_pandas(source):
            import pandas as pd

            return pd.Series(answers, index=source.index, name="answer", dtype=object)
        return answers

    def _log(self, count: int) -> SafeMarkdown:
        """The newest ``count`` logged exchanges, each prompt and answer rendered safely."""
        import datetime as dt

        from .backends import model_id

        if count < 1:
            raise UsageError("--log N needs N of at least 1")
        store = self._store()
        if store is None:
            raise UsageError(
                "The store is off (PizzaMagics.store = '' or $PIZZAGPT_STORE empty), so nothing "
                "is logged"
            )
        records = store.records(count)
        if not records:
            empty = f"The log at {store.path} is empty."
            return SafeMarkdown([Markup(f"<p><em>{escape(empty)}</em></p>")], empty)
        parts: list[Any] = []
        plain = []
        for number, record in enumerate(reversed(records), 1):
            when = dt.datetime.fromtimestamp(record["time"]).strftime("%Y-%m-%d %H:%M:%S")
            model = model_id(record["provider"], record["model"])
            notes = [when, model, record["source"]]
            if record["cached"]:
                notes.append("from the cache")
            if record["total_tokens"]:
                notes.append(f"{record['total_tokens']} tokens")
            heading = " · ".join(str(n) for n in notes)
            if number > 1:
                parts.append(Markup("<hr>"))
            parts += [
                Markup(f"<p><strong>{escape(heading)}</strong></p><blockquote>"),
                record["prompt"],
                Markup("</blockquote><div>"),
            ]
            if record["error"]:
                parts.append(Markup(f"<p><em>failed: {escape(record['error'])}</em></p>"))
            if record["answer"]:
                parts.append(record["answer"])
            parts.append(Markup("</div>"))
            outcome = record["answer"] if not record["error"] else f"failed: {record['error']}"
            plain.append(f"[{heading}]\nYou: {record['prompt']}\n{model}: {outcome}")
        return SafeMarkdown(parts, "\n\n".join(plain))

    def _models(self, args: Any) -> SafeMarkdown:
        """Every provider's models (each endpoint asked in parallel), or one provider's."""
        from .backends import PIZZAGPT, endpoints, list_providers
        from .loop import run_sync

        try:
            table = endpoints(self.endpoints)
            listed = run_sync(
                list_providers(args.models or None, self.endpoints, args.proxy or self.proxy)
            )
        except PizzagptError as exc:
            raise UsageError(f"--models: {exc}") from None
        parts: list[Any] = []
        plain = []
        for name, models in listed.items():
            where = "" if name == PIZZAGPT else f" ({escape(table[name].url)})"
            parts.append(Markup(f"<p><strong>{escape(name)}</strong>{where}</p>"))
            if isinstance(models, str):
                parts.append(Markup(f"<p><em>unreachable: {escape(models)}</em></p>"))
                plain.append(f"{name}: unreachable: {models}")
                continue
            ids = models
            items = "".join(
                f"<li><code>{escape(i)}</code>{' (default)' if i == self.model else ''}</li>"
                for i in ids
            )
            parts.append(Markup(f"<ul>{items}</ul>" if ids else "<p><em>no models</em></p>"))
            plain.append(f"{name}: " + (", ".join(ids) or "no models"))
        return SafeMarkdown(parts, "\n".join(plain))

    def _history(self) -> SafeMarkdown:
        exchanges = list(self.conversation.exchanges)
        if not exchanges:
            empty = "The conversation is empty."
            return SafeMarkdown([Markup(f"<p><em>{empty}</em></p>")], empty)
        # Each prompt and answer is rendered on its own, never pasted into new Markdown: an
        # answer's unclosed fence cannot swallow the rest of the history.
        parts: list[Any] = []
        plain = []
        for number, exchange in enumerate(exchanges, 1):
            if number > 1:
                parts.append(Markup("<hr>"))
            parts += [
                Markup(f"<p><strong>{number}. You</strong></p><blockquote>"),
                exchange.prompt_text,
                Markup(f"</blockquote><p><strong>{escape(exchange.model)}</strong></p><div>"),
                exchange.answer,
                Markup("</div>"),
            ]
            plain.append(
                f"[{number}] You: {exchange.prompt_text}\n"
                f"[{number}] {exchange.model}: {exchange.answer}"
            )
        return SafeMarkdown(parts, "\n\n".join(plain))


# Whole option names only: the prompt splitter must know exactly which words are options.
PizzaMagics.pizza.parser.allow_abbrev = False


_QUESTION_LINE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<target>[A-Za-z_]\w*[ \t]*=[ \t]*)?%pizza[ \t]+(?P<rest>\S.*\?)[ \t]*$"
)


def keep_question_marks(lines: list[str]) -> list[str]:
    """Input transformer: ``%pizza is this right?`` asks, instead of asking for help on ``right``.

    IPython reads a line ending in ``?`` as a help request before magics are looked at; a
    question usually ends so. This rewrites such ``%pizza`` lines into the call IPython itself
    would make for them.
    """
    out = []
    for line in lines:
        match = _QUESTION_LINE.match(line.rstrip("\n"))
        if match is None:
            out.append(line)
            continue
        call = f"get_ipython().run_line_magic('pizza', {match['rest']!r})"
        newline = "\n" if line.endswith("\n") else ""
        out.append(f"{match['indent']}{match['target'] or ''}{call}{newline}")
    return out


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
    from .loop import run_sync
    from .session import close_session

    run_sync(close_session())
