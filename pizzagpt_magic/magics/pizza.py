"""``PizzaMagics``: the ``%pizza`` line and cell magic, its settings and its dispatch.

Each mode of ``%pizza`` is a module of this package (``ask``, ``each``, ``fix``, ``log``,
``models``, ``history``, ``tools``, ``usage``, ``jobs``, ``prompts``, ``aliases``); this class
parses the options, checks them, and hands the question to the mode asked for. What the modes
share (building the question and the system message, the request options, the store, the log's
context) is here.
"""

from __future__ import annotations

import keyword
import re
import shlex
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import construct_parser

from ..cell_errors import CellErrors
from .interrupt import KeyboardInterrupt as ShortInterrupt
from .names import CELL_ERRORS, FIGURES
from .options import OPTIONS
from .parsing import split_options
from .settings import PizzaSettings

# Each mode's module is imported when the mode is first used: %load_ext loads only what
# parses the options.
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from IPython.core.interactiveshell import InteractiveShell

    from ..chat import Conversation, Reply

__all__ = ["PizzaMagics"]


class LazyParser:
    """A magic's option parser, built when first used: building the parser and its help text
    is most of what loading the extension would cost otherwise. It stands for the
    ``argparse`` parser (every attribute is the built parser's)."""

    __slots__ = ("_magic", "_parser")

    def __init__(self, magic: Any) -> None:
        self._magic = magic
        self._parser: Any = None

    def built(self) -> Any:
        if self._parser is None:
            # IPython's own construction; it replaces the docstring with the usage.
            parser = construct_parser(self._magic)
            # Whole option names only: the prompt splitter must know exactly which words
            # are options.
            parser.allow_abbrev = False
            self._parser = parser
        return self._parser

    def __getattr__(self, name: str) -> Any:
        return getattr(self.built(), name)


def _with_options(magic: Any) -> Any:
    """``magic`` with the options of ``OPTIONS``, in that order, and ``%pizza?`` usage (IPython
    asks a ``getdoc`` first: the usage is made then, not when the extension loads)."""
    for option in reversed(OPTIONS):
        magic = option(magic)
    parser = magic.parser = LazyParser(magic)

    def getdoc() -> str:
        parser.built()
        return str(magic.__doc__)

    magic.getdoc = getdoc
    return magic


@magics_class
class PizzaMagics(PizzaSettings):
    """Ask the Pizzagpt model from IPython: ``%pizza`` (line) and ``%%pizza`` (cell)."""

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._conversation: Conversation | None = None
        #: The errors of earlier cells, kept by ``after_cell`` (``load`` registers it).
        self.cell_errors = CellErrors(
            code_name=getattr(getattr(shell, "compile", None), "format_code_name", None)
        )
        self.observe(self._resize, names=["history_length", "cache_size"])
        self.observe(self._set_prices, names=["prices"])
        if self.prices:
            self._set_prices(None)
        #: What this kernel's answers cost so far (USD), for ``PizzaMagics.budget``.
        self.spent = 0.0
        from ..figures import DisplayedImages

        #: The images cells displayed, newest last (``load`` hooks it to the display publisher).
        self.figures = DisplayedImages()
        self.figure_hook = self.figures.hook(lambda: getattr(shell, "execution_count", None))
        #: (notebook, cell id, code hash) of the cells --insert and --fix opened (the store
        #: keeps them across kernels).
        self.inserted: set[tuple[str, str, str]] = set()

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
            from ..chat import Conversation

            self._conversation = Conversation(self.history_length, self.cache_size)
        return self._conversation

    def after_cell(self, result: Any) -> None:
        """``post_run_cell`` callback: record the cell's error, and bring ``Err`` and ``Fig``
        back into a namespace that ``%reset`` emptied."""
        self.cell_errors.record(result)
        self.user_ns.setdefault(CELL_ERRORS, self.cell_errors)
        self.user_ns.setdefault(FIGURES, self.figures)

    def _set_prices(self, change: Any) -> None:
        from ..cost import set_prices

        set_prices(self.prices)

    def _resize(self, change: Any) -> None:
        if self._conversation is not None:
            self._conversation.resize(max_exchanges=self.history_length, cache_size=self.cache_size)

    @_with_options
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
        args.saved_options = None
        managing = [
            flag
            for flag, given in (
                ("--save", args.save is not None),
                ("--alias", args.alias is not None),
                ("--prompts", args.prompts),
                ("--aliases", args.aliases),
            )
            if given
        ]
        if managing:
            from .aliases import list_aliases, set_or_remove_alias
            from .prompts import list_saved, save_question

            if len(managing) > 1:
                raise UsageError(f"{managing[0]} and {managing[1]} do not go together")
            if args.save is not None:
                return save_question(self, args, prompt)
            if args.alias is not None:
                return set_or_remove_alias(self, args, prompt)
            if prompt:
                raise UsageError(f"{managing[0]} takes no question")
            return list_saved(self) if args.prompts else list_aliases(self)
        if args.template:
            from .prompts import apply_template

            prompt = apply_template(args, prompt)
        args.silenced = silenced
        self._check_args(args)
        if args.reset:
            forgotten = self.conversation.reset()
            if not prompt and not args.each:
                print(f"Conversation cleared ({forgotten} exchanges forgotten).")
                return None
        if args.jobs:
            from .jobs import show_jobs

            return show_jobs(self, prompt)
        if (args.batch_api or args.no_wait) and not args.each:
            raise UsageError("--batch-api and --no-wait go with %%pizza --each")
        if args.no_wait and not args.batch_api:
            raise UsageError("--no-wait goes with --batch-api")
        if (args.since or args.plot) and not args.usage:
            raise UsageError("--since and --plot go with --usage")
        if args.usage:
            if prompt or args.each:
                raise UsageError("--usage takes no question")
            from .usage import show_usage

            return show_usage(self, args)
        if args.full and args.show_log is None:
            raise UsageError("--full goes with --log: %pizza --log N --full")
        if args.models is not None or args.history or args.show_log is not None:
            if prompt:
                raise UsageError("--models, --history and --log take no question")
            if args.show_log is not None:
                from .log import show_log

                return show_log(self, args.show_log, args.full)
            if args.models is not None:
                from .models import list_models

                return list_models(self, args)
            from .history import show_history

            return show_history(self)
        if args.fix is not None:
            if args.each:
                raise UsageError("--fix asks about one error; it does not go with --each")
            from .fix import fix_question

            prompt = fix_question(self, prompt, args)
        if args.answers is not None and not prompt and not args.each:
            from .answers import set_answer_file

            return set_answer_file(self, args)
        from .answers import using_answer_file

        args.source = (line, cell)
        try:
            with using_answer_file(self, args):
                result = self._dispatch(args, prompt, cell)
        except KeyboardInterrupt:
            # One short KeyboardInterrupt, as an interrupted time.sleep shows (the notes of
            # what was kept are shown already).
            raise ShortInterrupt from None
        return None if silenced else result

    def _dispatch(self, args: Any, prompt: str, cell: str | None) -> Any:
        if args.each:
            if cell is None and not args.template:  # a saved prompt's question is its own
                raise UsageError("--each works with the %%pizza cell magic (or with -t NAME)")
            if args.insert:
                raise UsageError(
                    "--insert puts one answer's code in a cell; it does not go with --each"
                )
            if args.tools is not None:
                raise UsageError("--tools goes with one question; it does not go with --each")
            from .each import ask_each

            return ask_each(self, args, prompt)
        if not prompt:
            raise UsageError(
                "Nothing to ask: the question is empty. Usage: %pizza [options] question"
            )
        from .ask import ask_one

        return ask_one(self, args, prompt)

    # -- what the modes share -------------------------------------------------------------------

    def _check_args(self, args: Any) -> None:
        from ..errors import PizzagptError

        if args.output is not None and "=" in args.output:
            raise UsageError(
                f"-o/--output names a variable for the answer, not {args.output!r}; for a "
                "model option use -O KEY=VALUE (capital O)"
            )
        if args.output is not None and (
            not args.output.isidentifier() or keyword.iskeyword(args.output)
        ):
            raise UsageError(f"-o/--output needs a variable name, not {args.output!r}")
        if args.timeout is not None and not args.timeout > 0:
            raise UsageError("--timeout must be more than 0 seconds")
        if args.concurrency is not None and args.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if args.proxy is not None:
            from ..transport import check_url

            try:
                check_url(args.proxy, "--proxy")
            except PizzagptError as exc:
                raise UsageError(str(exc)) from None
        if args.temperature is not None and not 0 <= args.temperature <= 2:
            raise UsageError("--temperature must be from 0 to 2")
        if args.max_cost is not None and not args.max_cost >= 0:
            raise UsageError("--max-cost must be 0 or more dollars")
        if (args.max_cost is not None or args.estimate) and not args.each:
            raise UsageError("--estimate and --max-cost go with --each (a batch)")
        if args.max_tokens is not None and args.max_tokens < 1:
            raise UsageError("--max-tokens must be at least 1")
        from ..backends import resolve
        from ..options import settle
        from .prompts import question_layer

        layer = question_layer(args)
        args.model_options = {}
        try:
            args.backend = resolve(args.model or self.model, self.endpoints)
            if args.models is None and not args.history:
                # Highest first: this question's, the saved prompt's, the alias's, the settings.
                args.backend, args.temperature, args.max_tokens, args.model_options = settle(
                    args.backend,
                    args.saved_options,
                    layer,
                    settings=self._settings_layer(),
                )
        except PizzagptError as exc:
            raise UsageError(str(exc)) from None
        args.model = args.backend.id
        args.format = args.format or self.format.lower()
        args.schema = self._schema(args.schema)

    def _schema(self, given: Any) -> Any:
        """The ``Schema`` of ``--schema``: a spec, or ``{name}`` naming a JSON Schema dict or a
        Pydantic model class in the namespace; or a saved prompt's schema (a spec or a JSON
        Schema dict)."""
        if given is None:
            return None
        from ..errors import PizzagptError
        from ..schema import as_schema

        if not isinstance(given, str):
            try:
                return as_schema(given)
            except PizzagptError as exc:
                raise UsageError(f"--schema: {exc}") from None
        name = re.fullmatch(r"\s*\{\s*([A-Za-z_][\w.]*)\s*\}\s*", given)
        try:
            if name is None:
                return as_schema(given)
            from ..interpolate import _resolve

            first, dot, rest = name.group(1).partition(".")
            value = _resolve(first, dot + rest, self.user_ns, given.strip())
            return as_schema(value)
        except PizzagptError as exc:
            raise UsageError(f"--schema: {exc}") from None

    def _settings_layer(self) -> dict[str, Any]:
        """The lowest layer of a question's options: ``options``, ``temperature`` and
        ``max_tokens`` of these settings (None: not set)."""
        return {**self.options, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _render(self, template: str, args: Any, namespace: Any = None) -> str:
        """A system message (or any text) with its references replaced; no images."""
        rendered = self._question(template, args, namespace)
        if isinstance(rendered, list):
            raise UsageError("Images go in the question, not in the system message (-s)")
        return rendered

    def _question(self, template: str, args: Any, namespace: Any = None) -> Any:
        """The question with its references replaced: text, or content parts (text and
        ``image_url``) when a reference is an image, each image where it stood."""
        return self._with_images(*self._interpolated(template, args, namespace), args)

    def _interpolated(
        self, template: str, args: Any, namespace: Any = None
    ) -> tuple[str, list[tuple[Any, str]]]:
        """The question's text with its references replaced, each image a marker, and the
        images as ``(value, reference)``: checked for size (a figure by its size in inches
        and dpi), none drawn yet (see ``_with_images``)."""
        if args.no_interpolate or not self.interpolate:
            return template, []
        from ..errors import PizzagptError
        from ..images import check_size, is_image
        from ..interpolate import format_value, interpolate

        images: list[tuple[Any, str]] = []

        def image(value: Any, reference: str) -> str | None:
            if not is_image(value):
                return None
            check_size(value, reference)
            images.append((value, reference))
            return f"\x00{len(images) - 1}\x00"

        try:
            text = interpolate(
                template,
                namespace if namespace is not None else self.user_ns,
                lambda value: format_value(value, self.value_budget),
                image,
            )
            if images:
                references = ", ".join(reference for _, reference in images)
                args.backend.check_images([{"content": [{"type": "image_url"}]}], references)
        except PizzagptError as exc:
            raise UsageError(str(exc)) from None
        return text, images

    def _with_images(self, text: str, images: list[tuple[Any, str]], args: Any) -> Any:
        """An interpolated question (``_interpolated``) with its images drawn and encoded:
        content parts, or the text as it is when it holds none."""
        if not images:
            return text
        from ..errors import PizzagptError
        from ..images import prepare

        parts: list[dict[str, Any]] = []
        try:
            for number, piece in enumerate(re.split(r"\x00(\d+)\x00", text)):
                if number % 2:
                    value, reference = images[int(piece)]
                    prepared = prepare(value, reference, self.image_max_side, self.image_max_bytes)
                    parts.append(prepared.part())
                elif piece:
                    parts.append({"type": "text", "text": piece})
        except PizzagptError as exc:
            raise UsageError(str(exc)) from None
        return parts

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
        self, args: Any, on_text: Callable[[str], Any] | None = None, tools: Any = None
    ) -> Callable[[str, str | None], Awaitable[Reply]]:
        """A coroutine function asking one prompt, with a system message, through the
        conversation (and its cache) with these options; ``on_text`` (a stream) gets the text
        as it arrives; ``tools`` (a ``tools.Toolbox``) lets the model look at variables."""
        use_cache = self.cache and not args.no_cache
        request = self._request_options(args)
        store = self._store()
        context = self._context()

        async def ask(prompt: str, system: str | None) -> Reply:
            reply = await self.conversation.ask(
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
                tools=tools,
                tool_rounds=self.tool_rounds,
                schema=args.schema,
                schema_retries=self.schema_retries,
                options=args.model_options,
                **request,
            )
            cost = reply.completion.cost if reply.completion is not None else None
            if cost is not None and cost.usd:
                self.spent += cost.usd
            return reply

        return ask

    def _estimate(self, args: Any, requests: list[tuple[Any, str | None]]) -> tuple[Any, Any]:
        """The ``estimates.Estimate`` of asking ``requests`` (prompt, system) with these options,
        and each one's estimated cost; those this kernel or the store has answered cost 0."""
        from ..estimates import estimate_batch

        use_cache = self.cache and not args.no_cache
        conversation = self.conversation
        return estimate_batch(
            args.backend,
            [conversation.messages(p, system=s, chat=args.chat) for p, s in requests],
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            store=self._store() if use_cache else None,
            base_url=self.base_url,
            # The memory cache is keyed as the store is (engine.keys.prompt_key).
            answered=conversation.cache.__contains__ if use_cache else None,
        )

    def _limits(self, args: Any, estimate: Any) -> Any:
        """The cost limits in force (``--max-cost``, ``PizzaMagics.budget``), or None."""
        from ..cost import format_usd
        from ..estimates import Budget, Limits

        budgets = []
        if args.max_cost is not None:
            budgets.append(Budget(args.max_cost, what=f"--max-cost {args.max_cost:g}"))
        if self.budget is not None:
            budgets.append(
                Budget(
                    self.budget, self.spent, what=f"PizzaMagics.budget ({format_usd(self.budget)})"
                )
            )
        if not budgets:
            return None
        if estimate.usd is None and estimate.requests:
            raise UsageError(
                f"The price of {estimate.model} is unknown ({estimate.pricing}), so a cost limit "
                "cannot hold; give it in PizzaMagics.prices"
            )
        return Limits(budgets)

    def _check_budget(self, args: Any, prompt: Any, system: str | None) -> None:
        """Refuse a question that could take this kernel past ``PizzaMagics.budget``."""
        if self.budget is None:
            return
        estimate, (usd,) = self._estimate(args, [(prompt, system)])
        limits = self._limits(args, estimate)
        if limits is not None and not limits.reserve(usd or 0.0):
            raise UsageError(str(limits.error()))

    def _store(self) -> Any:
        """The store in effect (None when off or failed)."""
        from ..store import get_store

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

    def _where(self) -> tuple[str, str] | None:
        """The notebook (its path, from the kernel's session) and the id of the cell running,
        when a Jupyter frontend said them; else None."""
        import os

        kernel = getattr(self.ipython, "kernel", None)
        notebook = self.user_ns.get("__session__") or os.environ.get("JPY_SESSION_NAME")
        get_parent = getattr(kernel, "get_parent", None)
        if not notebook or get_parent is None:
            return None
        try:
            cell = (get_parent("shell") or {}).get("metadata", {}).get("cellId")
        except Exception:  # noqa: BLE001 - an older kernel's signature: no cell id
            return None
        return (str(notebook), str(cell)) if cell else None

    def _check_size(self, prompt: Any, system: str | None, chat: bool) -> None:
        from ..errors import PizzagptError
        from ..images import content_text

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
