"""The command line: ``pizzagpt`` (or ``python -m pizzagpt_magic``).

``ask``       ask one question; the answer goes to stdout
``demo``      run a notebook (the quickstart by default) against the offline emulator
``emulator``  run the offline emulator (``python -m pizzagpt_magic.emulator`` does the same)

A failure prints one short line to stderr and exits non-zero; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
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
    ask.add_argument("-m", "--model", help="model (default gpt-4o-mini)")
    ask.add_argument("-s", "--system", metavar="TEXT", help="system message")
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
    ask.add_argument("--base-url", metavar="URL", help="service URL (default: $PIZZAGPT_URL)")
    ask.add_argument("--retries", type=int, metavar="N", help="retries on 429/5xx (default 3)")

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


def _ask(args: argparse.Namespace) -> int:
    from .api import ask
    from .render import Answer

    if args.prompt.count("-") > 1:
        print("pizzagpt ask: standard input can be read once; give one '-'", file=sys.stderr)
        return 2
    prompt = _prompt(args.prompt)
    text = ask(
        prompt,
        model=args.model,
        system=args.system,
        timeout=args.timeout,
        proxy=args.proxy,
        base_url=args.base_url,
        max_retries=args.retries,
    )
    answer = Answer(text, format=args.format)
    if args.format == "json":
        print(json.dumps(answer.data, indent=2, ensure_ascii=False))
    elif args.format == "code":
        sys.stdout.write(answer.code)
    else:
        print(text)
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
