"""The options of ``%pizza``, in the order ``%pizza?`` lists them.

A mode's options sit together; a new mode adds its options here and its handler in a module of
its own.
"""

from __future__ import annotations

from IPython.core.magic_arguments import argument

from ..formats import FORMATS

__all__ = ["OPTIONS"]

OPTIONS = (
    argument(
        "-m",
        "--model",
        help="Model to ask: gpt-4o-mini, PROVIDER:MODEL (ollama:llama3.2), "
        "package.module.Provider[:MODEL] (see --models) or an alias (see --aliases).",
    ),
    argument(
        "-f",
        "--format",
        type=str.lower,
        choices=FORMATS,
        help="Show the answer as markdown (default), text, code or json.",
    ),
    argument(
        "-o",
        "--output",
        metavar="NAME",
        help="Also store the answer in this variable: the text, or the code (-f code) "
        "or the parsed value (-f json).",
    ),
    argument(
        "--schema",
        metavar="SPEC",
        help='Answer as data of this shape: a spec such as "sentiment pos|neg|neu, score int: '
        '1 to 5, reason" (types str, int, float, bool, date, a|b|c), or {name} for a JSON '
        "Schema dict or a Pydantic model class. -o gets the value; with --each a typed "
        "DataFrame.",
    ),
    argument("-s", "--system", metavar="TEXT", help="System message for this question."),
    argument(
        "-c",
        "--chat",
        action="store_true",
        help="Continue the conversation: earlier exchanges go with the question.",
    ),
    argument("--reset", action="store_true", help="Forget the conversation first."),
    argument("--history", action="store_true", help="Show the conversation so far."),
    argument(
        "--models",
        nargs="?",
        const="",
        metavar="PROVIDER",
        help="List the models of every provider (asking each endpoint), or of PROVIDER.",
    ),
    argument("--temperature", type=float, metavar="T", help="Sampling temperature (0 to 2)."),
    argument("--max-tokens", type=int, metavar="N", help="Longest answer in tokens."),
    argument(
        "-O",
        "--option",
        action="append",
        dest="options",
        metavar="KEY=VALUE",
        help="Any model option, into the request body (repeatable): -O seed=7 -O "
        "stop='[\"\\n\\n\"]'. A VALUE that reads as JSON is that value, else text; "
        "KEY=null drops an option an alias or a saved prompt set.",
    ),
    argument(
        "--no-stream", action="store_true", help="Show the answer when complete, not as it arrives."
    ),
    argument("--timeout", type=float, metavar="SECONDS", help="Time limit for this question."),
    argument("--proxy", metavar="URL", help="Proxy for this question."),
    argument("--no-cache", action="store_true", help="Ask again even if answered before."),
    argument("--no-log", action="store_true", help="Keep this exchange out of the log."),
    argument(
        "--log",
        nargs="?",
        const=10,
        type=int,
        metavar="N",
        dest="show_log",
        help="Show the newest N logged exchanges (default 10) as a table: time, cell, model, "
        "seconds, tokens, cached, and the first line of question and answer.",
    ),
    argument("--full", action="store_true", help="With --log: each exchange whole."),
    argument(
        "--usage",
        action="store_true",
        help="Show requests, cache hits, tokens and cost by model: this kernel's and the "
        "store's (with --since WHEN: over that window).",
    ),
    argument(
        "--since",
        metavar="WHEN",
        help="With --usage: a date (2026-11-28), a time or an age (30m, 12h, 7d).",
    ),
    argument(
        "--plot",
        nargs="?",
        const="cost",
        choices=("cost", "tokens"),
        help="With --usage: draw cost (default) or tokens per day by model (needs matplotlib).",
    ),
    argument(
        "--no-interpolate",
        action="store_true",
        help="Send {braces} as they are, without substituting variables.",
    ),
    argument(
        "--each",
        metavar="NAME",
        help="Cell magic: ask the question once per item of the iterable NAME, with "
        "{item} and {index} bound; answers go to -o as a list (a Series for pandas).",
    ),
    argument("--concurrency", type=int, metavar="N", help="Requests in flight for --each."),
    argument(
        "--batch-api",
        action="store_true",
        help="With --each: send the questions as the provider's batch jobs (OpenAI, Groq, "
        "Anthropic; about half the price, answers within 24 hours). Waits with a progress bar; "
        "running the cell again picks its jobs up, after a restart too.",
    ),
    argument(
        "--no-wait",
        action="store_true",
        help="With --batch-api: submit and return at once; -o gets the job handle (status(), "
        "result(), cancel()).",
    ),
    argument(
        "--jobs",
        action="store_true",
        help="List the provider batch jobs in the store; --jobs cancel ID cancels one.",
    ),
    argument(
        "--pack",
        metavar="N|auto",
        help="--each: how many rows may share one request (1: one a request; auto: as many "
        "as fit, the default).",
    ),
    argument(
        "--estimate",
        action="store_true",
        help="With --each: say how many requests the batch would send (prompts not yet "
        "answered), their tokens and cost; send nothing.",
    ),
    argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="With --each: send no request that could take the batch's cost past USD; the "
        "answers received are kept, and a rerun asks only for the rest.",
    ),
    argument(
        "--fix",
        nargs="?",
        const=-1,
        type=int,
        metavar="N",
        help="Ask about the newest error (or cell N's: --fix N): the failing cell's code and "
        "its error go with an instruction to explain it and correct the cell, which opens "
        "below. Text after it is added to the question.",
    ),
    argument(
        "--tools",
        nargs="?",
        const="question",
        choices=("question", "all"),
        metavar="all",
        help="Let the model look at the variables the question names (--tools all: at every "
        "variable) through read-only tools (describe, head, value_counts, missing, ...), run "
        "in this kernel; OpenAI-compatible and Anthropic endpoints only. PizzaMagics.tools "
        "sets the default.",
    ),
    argument("--no-tools", action="store_true", help="No tools for this question."),
    argument(
        "--answers",
        metavar="PATH",
        help="Read answers from this answer file first and write every answer to it (a JSON "
        "Lines file kept with the notebook); alone, use it for the rest of the kernel.",
    ),
    argument(
        "--answers-only",
        action="store_true",
        help="Answers come only from the answer file: a question not in it fails, and nothing "
        "is sent.",
    ),
    argument(
        "--refresh",
        action="store_true",
        help="Ask again and replace the answer file's line (and the cached answer).",
    ),
    argument(
        "--insert",
        action="store_true",
        help="Also put the answer's code in a new cell below, ready to run: its Python code "
        "blocks (or all its blocks, or all of it when it has none).",
    ),
    # saved prompts and model aliases (magics/prompts.py, magics/aliases.py)
    argument(
        "-t",
        "--template",
        metavar="NAME",
        help="Ask the saved prompt NAME: the question given with the run fills its {input} "
        "(or is appended), and the options given override the saved ones.",
    ),
    argument(
        "--save",
        metavar="NAME",
        help="Save the question (placeholders unexpanded) with its model, system, format, "
        "schema, temperature, max tokens, -O options and concurrency as NAME; asks nothing.",
    ),
    argument("--prompts", action="store_true", help="List the saved prompts."),
    argument(
        "--alias",
        metavar="NAME=MODEL",
        help="Save a model alias with the -O, --temperature and --max-tokens given; then "
        "-m NAME uses it. NAME= removes it.",
    ),
    argument("--aliases", action="store_true", help="List the model aliases."),
)
