"""The command line: ``pizzagpt`` (or ``python -m pizzagpt_magic``).

``ask``       ask one question; the answer goes to stdout as it arrives
``models``    list the models of every provider (or of one)
``logs``      show or search the log of exchanges; ``--prune`` deletes old ones
``cache``     ``info`` (entries, size, path) or ``clear``
``answers``   ``prune`` an answer file's unused lines, or ``diff`` two answer files
``usage``     requests, cache hits, tokens and cost from the log, by model, day or source
``demo``      run a notebook (the quickstart by default) against the offline emulator
``emulator``  run the offline emulator (``python -m pizzagpt_magic.emulator`` does the same)

A failure prints one short line to stderr and exits non-zero; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .render import FORMATS

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pizzagpt",
        description="Ask the Pizzagpt model (gpt-4o-mini) from the command line, or run the "
        "offline demo. Set PIZZAGPT_URL to use another server, such as the emulator.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ask = commands.add_parser(
        "ask",
        help="ask one question",
        description=(
            "Ask one question and print the answer. PROMPT words are joined with spaces; "
            "a '-' among them stands for standard input, set apart by a blank line, so that "
            "data can be piped in: cat sales.csv | pizzagpt ask 'Which region leads?' -"
        ),
    )
    ask.add_argument(
        "prompt", nargs="+", metavar="PROMPT", help="the question; - stands for standard input"
    )
    ask.add_argument(
        "-m",
        "--model",
        help="model id (default gpt-4o-mini): a Pizzagpt model, PROVIDER:MODEL "
        "(ollama:llama3.2, openai:gpt-4o-mini) or package.module.Provider[:MODEL]",
    )
    ask.add_argument("-s", "--system", metavar="TEXT", help="system message")
    ask.add_argument(
        "--schema",
        metavar="SPEC",
        help="answer as JSON of this shape, checked (and repaired once): a spec such as "
        "'sentiment pos|neg|neu, score int: 1 to 5, reason' (types str, int, float, bool, "
        "date, a|b|c), a JSON Schema, or @FILE holding one",
    )
    ask.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        default="markdown",
        help="markdown or text: the answer as sent; code: only its code blocks; "
        "json: the JSON it holds, pretty-printed",
    )
    ask.add_argument("--timeout", type=float, metavar="SECONDS", help="time limit (default 60)")
    ask.add_argument("--proxy", metavar="URL", help="proxy URL (default: the proxy variables)")
    ask.add_argument(
        "--base-url",
        metavar="URL",
        help="service URL (default: $PIZZAGPT_URL, or the endpoint's); with --api-key-env or "
        "a model Pizzagpt does not serve, an OpenAI-compatible endpoint (http://host:port/v1)",
    )
    ask.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="the environment variable holding the key of the --base-url endpoint",
    )
    ask.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    ask.add_argument("--max-tokens", type=int, metavar="N", help="longest answer in tokens")
    ask.add_argument(
        "--no-stream", action="store_true", help="print the answer when complete, not as it comes"
    )
    ask.add_argument("--retries", type=int, metavar="N", help="retries on 429/5xx (default 3)")
    ask.add_argument(
        "--no-cache", action="store_true", help="ask again even if the store has an answer"
    )
    ask.add_argument("--no-log", action="store_true", help="keep this exchange out of the log")
    ask.add_argument(
        "--answers",
        metavar="PATH",
        help="answer file read before the store and written with the answer "
        "(default: $PIZZAGPT_ANSWERS)",
    )
    ask.add_argument(
        "--answers-only",
        action="store_true",
        default=None,
        help="answer only from the answer file; nothing is sent",
    )

    logs = commands.add_parser(
        "logs",
        help="show or search the log of exchanges",
        description="The newest exchanges in the store's log ($PIZZAGPT_STORE, else the user "
        "data directory), oldest first, or with --json as JSON records, newest first.",
    )
    logs.add_argument("-n", type=int, default=10, metavar="N", help="how many (default 10)")
    logs.add_argument("--json", action="store_true", help="JSON records")
    logs.add_argument("-q", "--query", metavar="TEXT", help="search prompts and answers")
    logs.add_argument("-m", "--model", metavar="MODEL", help="a model id or a provider")
    logs.add_argument("--since", metavar="WHEN", help="a date, a time or an age (30m, 12h, 7d)")
    logs.add_argument(
        "--prune", action="store_true", help="delete exchanges older than --older-than DAYS"
    )
    logs.add_argument("--older-than", type=float, metavar="DAYS", help="with --prune")

    cache = commands.add_parser(
        "cache",
        help="the store's cache: info, clear, or merge a distributed job's shards",
        description="info: entries, size and path; clear: empty the cache; merge DIR: copy the "
        "answers and log of every shard in DIR (a distributed job's $PIZZAGPT_STORE_DIR) into "
        "the store, once each (idempotent; run it while nothing writes to the shards).",
    )
    cache.add_argument(
        "action", choices=("info", "clear", "merge"), help="show its size, empty it, or merge"
    )
    cache.add_argument("directory", nargs="?", metavar="DIR", help="with merge: the shards")

    jobs = commands.add_parser(
        "jobs",
        help="the provider batch jobs in the store, or cancel one",
        description="List the provider batch jobs the store keeps (backend, status, counts, "
        "created and finished times), newest first; 'jobs cancel ID' cancels one.",
    )
    jobs.add_argument("action", nargs="?", choices=("cancel",), help="cancel the job ID")
    jobs.add_argument("id", nargs="?", metavar="ID", help="with cancel: the job's id")
    jobs.add_argument("--json", action="store_true", help="JSON records")

    answers = commands.add_parser(
        "answers",
        help="an answer file: prune its unused lines, or diff two",
        description="prune: drop the lines of an answer file that no cell of NOTEBOOK asks any "
        "more (known from the answer keys its saved outputs record). diff: which questions "
        "were added, removed or answered differently between two answer files.",
    )
    actions = answers.add_subparsers(dest="action", metavar="ACTION", required=True)
    prune = actions.add_parser("prune", help="drop lines no cell of the notebook asks")
    prune.add_argument("path", metavar="PATH", help="the answer file")
    prune.add_argument(
        "--notebook", required=True, metavar="NB.ipynb", help="the notebook, with its outputs"
    )
    compare = actions.add_parser("diff", help="which questions changed between two files")
    compare.add_argument("old", metavar="OLD")
    compare.add_argument("new", metavar="NEW")
    usage = commands.add_parser(
        "usage",
        help="requests, tokens and cost from the log",
        description="Requests sent (and failed), cache hits, input and output tokens, cost and "
        "the cost the cache saved, from the store's log, by model (or day, or source).",
    )
    usage.add_argument("--since", metavar="WHEN", help="a date, a time or an age (30m, 12h, 7d)")
    usage.add_argument("--by", choices=("model", "day", "source"), default="model")
    usage.add_argument("--json", action="store_true", help="JSON records")
    usage.add_argument(
        "--plot",
        nargs="?",
        const="cost",
        choices=("cost", "tokens"),
        help="draw cost (default) or tokens per day by model into -o FILE.png (matplotlib)",
    )
    usage.add_argument("-o", "--output", metavar="FILE.png", help="where --plot draws")

    models = commands.add_parser(
        "models",
        help="list the models of every provider",
        description="List Pizzagpt's models and, asking each in parallel, the models of every "
        "OpenAI-compatible endpoint (presets and those of the pizzagpt_magic.providers entry "
        "points); an endpoint that cannot be reached is listed with the reason.",
    )
    models.add_argument("provider", nargs="?", metavar="PROVIDER", help="list only this one")

    demo = commands.add_parser(
        "demo",
        help="run a notebook against the offline emulator",
        description=(
            "Start the emulator on a free loopback port, execute NOTEBOOK (default: the "
            "quickstart) in a real Jupyter kernel with PIZZAGPT_URL pointing at it, print each "
            "%%pizza cell's prompt and answer, and write the executed notebook (and HTML, if "
            "nbconvert is installed) to the output directory. Needs no internet."
        ),
    )
    demo.add_argument("notebook", nargs="?", metavar="NOTEBOOK", help="the .ipynb to run")
    demo.add_argument(
        "-o",
        "--output-dir",
        default="demo-output",
        metavar="DIR",
        help="where the executed notebook goes (default: ./demo-output)",
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=120,
        metavar="SECONDS",
        help="time limit per cell (default 120)",
    )
    demo.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="latency the emulator adds to each answer (default 0)",
    )

    commands.add_parser(
        "emulator", help="run the offline emulator (see its --help)", add_help=False
    )
    return parser


def _prompt(words: list[str]) -> str:
    """The words joined with spaces; a ``-`` is standard input, set apart by blank lines."""
    if "-" not in words:
        return " ".join(words)
    at = words.index("-")
    before, data, after = " ".join(words[:at]), sys.stdin.read(), " ".join(words[at + 1 :])
    if not (before or after):
        return data
    return "\n\n".join(part for part in (before, data.strip("\n"), after) if part)


def _backend(args: argparse.Namespace) -> Any:
    """The backend of ``-m``, ``--base-url`` and ``--api-key-env``."""
    import dataclasses

    from .backends import Backend, Endpoint, resolve
    from .errors import ConfigurationError, ModelNotFoundError
    from .transport import check_url

    if args.api_key_env is not None or args.base_url is None:
        if args.api_key_env is None:
            return resolve(args.model)
        if not args.base_url:
            raise ConfigurationError("--api-key-env goes with --base-url (the endpoint's URL)")
    try:
        backend = resolve(args.model)
    except ModelNotFoundError:
        backend = None
    if args.api_key_env is None and backend is not None:
        if backend.endpoint is not None:
            url = check_url(args.base_url, "--base-url")
            endpoint = dataclasses.replace(backend.endpoint, base_url=url, base_url_env=None)
            return dataclasses.replace(backend, endpoint=endpoint)
        return backend  # Pizzagpt or a provider class: --base-url is passed on as it is
    model = args.model or ""
    api = "openai"
    if backend is not None and backend.endpoint is not None:
        # The endpoint named speaks its own API at the new address (anthropic: Messages).
        model, api = backend.model, backend.endpoint.api
    if not model:
        raise ConfigurationError("Name the model to ask the --base-url endpoint with -m")
    url = check_url(args.base_url, "--base-url")
    endpoint = Endpoint("custom", url, args.api_key_env, api=api)
    return Backend("custom", model, endpoint=endpoint)


def _ask(args: argparse.Namespace) -> int:
    from .api import build_messages, complete_messages
    from .loop import run_sync
    from .render import Answer

    if args.prompt.count("-") > 1:
        print("pizzagpt ask: standard input can be read once; give one '-'", file=sys.stderr)
        return 2
    schema = _schema(args.schema)
    prompt = _prompt(args.prompt)
    backend = _backend(args)
    backend.check_parameters(args.temperature, args.max_tokens)
    printing = (
        args.format in ("markdown", "text")
        and backend.streams
        and not args.no_stream
        and schema is None
    )
    printed: list[str] = []

    def on_text(chunk: str) -> None:
        printed.append(chunk)
        sys.stdout.write(chunk)
        sys.stdout.flush()

    from . import answers

    try:
        settings = answers.settings_for(args.answers, only=args.answers_only)
        with answers.using(settings):
            completion = run_sync(
                complete_messages(
                    backend,
                    build_messages(prompt, system=args.system),
                    stream=backend.streams and not args.no_stream,
                    temperature=args.temperature,
                    max_tokens=args.max_tokens,
                    on_text=on_text if printing else None,
                    cache=not args.no_cache,
                    log=not args.no_log,
                    context={"source": "cli"},
                    timeout=args.timeout,
                    proxy=args.proxy,
                    base_url=args.base_url if backend.is_pizzagpt else None,
                    max_retries=args.retries,
                    schema=schema,
                )
            )
    except BaseException:
        if printed:
            sys.stdout.write("\n")
        raise
    text = completion.text
    if schema is not None:
        data = schema.as_data(completion.value)
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return 0
    answer = Answer(text, format=args.format)
    if args.format == "json":
        print(json.dumps(answer.data, indent=2, ensure_ascii=False))
    elif args.format == "code":
        sys.stdout.write(answer.code)
    elif printed:
        if not text.endswith("\n"):
            print()
    else:
        print(text)
    if completion.truncated:
        print("pizzagpt: the answer was cut at the token limit (--max-tokens)", file=sys.stderr)
    return 0


def _schema(given: str | None) -> Any:
    """The ``Schema`` of ``--schema``: a spec, a JSON Schema (text starting with ``{``), or
    ``@FILE`` holding one."""
    if given is None:
        return None
    from .errors import SchemaSpecError
    from .schema import as_schema

    text = given
    if given.startswith("@"):
        try:
            text = Path(given[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaSpecError(f"--schema {given}: {exc.strerror or exc}") from None
    if text.lstrip().startswith("{"):
        try:
            return as_schema(json.loads(text))
        except ValueError as exc:
            if isinstance(exc, SchemaSpecError):
                raise
            raise SchemaSpecError(f"--schema: the JSON Schema is not JSON ({exc})") from None
    return as_schema(text)


def _models(args: argparse.Namespace) -> int:
    from .backends import list_providers
    from .errors import ConfigurationError
    from .loop import run_sync

    try:
        listed = run_sync(list_providers(args.provider))
    except ConfigurationError as exc:
        print(f"pizzagpt models: {exc}", file=sys.stderr)
        return 2
    for name, models in listed.items():
        if isinstance(models, str):
            print(f"{name}: unreachable: {models}")
        else:
            print(f"{name}: {', '.join(models) or 'no models'}")
    return 0


def _open_store() -> Any:
    """The store, for commands that read it or delete from it: one that does not exist yet
    is not made (an empty one would only hide a wrong path)."""
    from .store import get_store, store_path

    path = store_path()
    if path is None:
        raise _StoreOff("the store is off ($PIZZAGPT_STORE is empty)")
    if not path.exists():
        raise _StoreOff(f"there is no store at {path.absolute()} (nothing was asked with it)")
    store = get_store()
    if store is None:
        raise _StoreOff(f"the store at {path} cannot be used")
    return store


class _StoreOff(Exception):
    pass


def _logs(args: argparse.Namespace) -> int:
    import datetime as dt
    import math

    from .backends import model_id
    from .store import parse_since

    for flag, value in (("-n", args.n), ("--older-than", args.older_than)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            print(
                f"pizzagpt logs: {flag} takes a number of 0 or more, not {value}", file=sys.stderr
            )
            return 2
    if args.prune and args.older_than is None:
        print("pizzagpt logs: --prune needs --older-than DAYS", file=sys.stderr)
        return 2
    store = _open_store()
    if args.prune:
        print(f"Deleted {store.prune(args.older_than)} exchanges from {store.path}")
        return 0
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"pizzagpt logs: {exc}", file=sys.stderr)
        return 2
    records = store.records(args.n, query=args.query, model=args.model, since=since)
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
        return 0
    for record in reversed(records):
        when = dt.datetime.fromtimestamp(record["time"]).strftime("%Y-%m-%d %H:%M:%S")
        model = model_id(record["provider"], record["model"])
        flags = " (cached)" if record["cached"] else ""
        cost = _cost_note(record)
        print(f"# {when}  {model}  {record['source']}{flags}{cost}")
        print(f"> {record['prompt']}")
        if record["error"]:
            print(f"! {record['error']}")
        if record["answer"]:
            print(record["answer"])
        print()
    return 0


def _cost_note(record: dict[str, Any]) -> str:
    """A logged exchange's cost, for its header line."""
    from .cost import Cost

    if record.get("pricing") is None:
        return ""
    cost = Cost(record["cost"], record["pricing"], record["cost_saved"], bool(record["cached"]))
    return f"  {cost.label}"


def _usage(args: argparse.Namespace) -> int:
    from .reports import PlotUnavailable, plot_usage, usage_report
    from .store import parse_since

    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"pizzagpt usage: {exc}", file=sys.stderr)
        return 2
    store = _open_store()
    if args.plot:
        if not args.output:
            print("pizzagpt usage: --plot draws into a file: add -o FILE.png", file=sys.stderr)
            return 2
        try:
            plot_usage(store, since=since, what=args.plot).save(args.output)
        except PlotUnavailable as exc:
            print(f"pizzagpt usage: {exc}", file=sys.stderr)
            return 1
        print(f"Wrote {args.output}")
        return 0
    report = usage_report(store, since=since, by=args.by, title=f"Usage in {store.path}")
    if args.json:
        print(json.dumps(report.records(), indent=2, ensure_ascii=False))
    else:
        print(report.text())
    return 0


def _cache(args: argparse.Namespace) -> int:
    if args.action == "merge":
        return _merge(args)
    if args.directory is not None:
        print(f"pizzagpt cache {args.action}: takes no directory", file=sys.stderr)
        return 2
    store = _open_store()
    if args.action == "clear":
        print(f"Cleared {store.clear_cache()} cached answers from {store.path}")
        return 0
    info = store.info()
    print(f"path: {info['path']}")
    print(
        f"cached answers: {info['cache_entries']} ({info['cache_bytes'] / 1e6:.2f} MB of "
        f"{info['cache_limit_bytes'] / 1e6:.0f} MB)"
    )
    print(f"logged exchanges: {info['log_entries']}")
    print(f"file size: {info['file_bytes'] / 1e6:.2f} MB")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from .jobs import cancel_job, format_jobs, list_jobs

    store = _open_store()
    if args.action == "cancel":
        if not args.id:
            print("pizzagpt jobs: cancel needs the job's ID", file=sys.stderr)
            return 2
        record = cancel_job(store, args.id)
        if args.json:
            print(json.dumps(record, indent=2))
        else:
            print(f"Job {record['id']} is {record['status']}")
        return 0
    jobs = list_jobs(store, None)
    print(json.dumps(jobs, indent=2) if args.json else format_jobs(jobs))
    return 0


def _answers(args: argparse.Namespace) -> int:
    from . import answers

    if args.action == "prune":
        gone = answers.prune(args.path, args.notebook)
        print(f"Dropped {gone} unused answers from {args.path}")
        return 0
    changes = answers.diff(args.old, args.new)
    for change, key, question in changes:
        question = question if len(question) <= 100 else question[:99] + "…"
        print(
            f"{'+' if change == 'added' else '-' if change == 'removed' else '~'} "
            f"{key[:12]}  {question}"
        )
    if not changes:
        print("No question changed.")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .distributed.shards import merge_shards
    from .store import store_path

    if args.directory is None or not Path(args.directory).is_dir():
        print("pizzagpt cache merge: name the directory of shards (DIR)", file=sys.stderr)
        return 2
    target = store_path()
    if target is None:
        raise _StoreOff("the store is off ($PIZZAGPT_STORE is empty)")
    added = merge_shards(args.directory, target)
    print(f"Added {added} answers from {args.directory} to {target}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        from .emulator import main as emulator_main

        return emulator_main(argv[1:])
    args = _build_parser().parse_args(argv)
    from .errors import PizzagptError

    try:
        if args.command == "ask":
            return _ask(args)
        if args.command == "models":
            return _models(args)
        if args.command == "answers":
            return _answers(args)
        if args.command in ("logs", "cache", "usage", "jobs"):
            run = {"logs": _logs, "cache": _cache, "usage": _usage, "jobs": _jobs}[args.command]
            try:
                return run(args)
            except _StoreOff as exc:
                print(f"pizzagpt {args.command}: {exc}", file=sys.stderr)
                return 1
        from .demo import DemoError, run_demo

        try:
            return run_demo(
                args.notebook, args.output_dir, timeout=args.timeout, latency=args.latency
            )
        except DemoError as exc:
            print(f"pizzagpt demo: {exc}", file=sys.stderr)
            return 1
    except PizzagptError as exc:
        print(f"pizzagpt: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pizzagpt: interrupted", file=sys.stderr)
        return 130
