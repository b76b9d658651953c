"""Every exception the package raises on purpose.

The hierarchy::

    PizzagptError                      base of everything below
    ├── ConfigurationError (ValueError) a setting or variable (a URL, a proxy) that cannot work
    ├── PromptError (ValueError)       nothing to send: no messages, an empty or oversized prompt
    │   ├── InterpolationError         a {reference} in a prompt that cannot be resolved (``name``)
    │   └── SchemaSpecError            a schema that cannot be read (nothing is sent)
    ├── ModelNotFoundError (ValueError) a model name the provider does not serve
    ├── AnswerMissingError             answers only from the answer file, and it has none for this
    ├── ProviderError                  a provider class failed with an exception of its own
    ├── TransportError                 the request did not get an HTTP answer
    │   ├── ConnectError               connection refused, DNS failure, TLS failure, proxy refused
    │   ├── RequestTimeoutError        the connect or total timeout ran out
    │   └── ConnectionLostError        the server dropped the connection mid-answer
    ├── ResponseError                  an HTTP answer came, but not a usable one
    │   ├── HTTPStatusError            a 4xx or 5xx status (``status``, ``retry_after``)
    │   │   └── AuthenticationError    the endpoint refused the API key (401, 403)
    │   ├── RedirectError              a redirect a POST cannot follow (``status``, ``location``)
    │   ├── NonJSONResponseError       a body that is not JSON, such as an HTML block page
    │   ├── ResponseShapeError         JSON without a string ``content`` where one belongs
    │   ├── EmptyAnswerError           the content is missing, empty or only white space
    │   ├── AnswerTooLargeError        one streamed event, or the whole answer, is over its limit
    │   ├── MisuseError (ValueError)   the service refused the request as misuse
    │   └── AnswerFormatError (ValueError) the answer holds no value of the format asked for
    │       └── SchemaError            the answer does not fit the schema asked for (``field``)
    ├── BatchError                     some items of ``ask_many`` failed (``errors``, ``results``)
    ├── JobError                       a provider batch job, or one of its lines, did not answer
    │   ├── BatchAPIUnavailable        the backend has no Batch API (nothing was submitted)
    │   └── JobLineError               one line of a job failed or expired (the provider's reason)
    ├── BudgetExceededError            a cost limit stopped a batch (``spent``, ``limit``)
    └── ToolError                      a tool call that cannot run (its message goes to the model)
        └── ToolRoundsError            the model still called tools after the last round allowed

``MisuseError`` is a ``ValueError`` because the seed provider raised ``ValueError`` for it, and code
written against that interface catches it so. Messages are single lines meant to be shown as they
are; none of them contains proxy credentials.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AnswerFormatError",
    "AnswerMissingError",
    "AnswerTooLargeError",
    "AuthenticationError",
    "ProviderError",
    "ConfigurationError",
    "RedirectError",
    "BatchAPIUnavailable",
    "BatchError",
    "JobError",
    "JobLineError",
    "BudgetExceededError",
    "ConnectError",
    "ConnectionLostError",
    "EmptyAnswerError",
    "HTTPStatusError",
    "InterpolationError",
    "MisuseError",
    "ModelNotFoundError",
    "NonJSONResponseError",
    "PizzagptError",
    "PromptError",
    "RequestTimeoutError",
    "ResponseError",
    "ResponseShapeError",
    "SchemaError",
    "SchemaSpecError",
    "ToolError",
    "ToolRoundsError",
    "TransportError",
]


class PizzagptError(Exception):
    """Base class of every error this package raises on purpose.

    ``partial`` is the text of an answer that had begun to arrive when the error happened (a
    stream cut short), else ``""``.
    """

    partial: str = ""


class ConfigurationError(PizzagptError, ValueError):
    """A setting or environment variable (a URL, a proxy) cannot work; the message names it."""


class PromptError(PizzagptError, ValueError):
    """There is nothing sensible to send."""


class InterpolationError(PromptError):
    """A ``{reference}`` in a prompt names nothing in the namespace, or cannot be evaluated."""

    def __init__(self, message: str, name: str) -> None:
        self.name = name
        super().__init__(message)


class ModelNotFoundError(PizzagptError, ValueError):
    """The requested model is not one the provider serves."""

    def __init__(self, provider: str, model: str, models: list[str], detail: str = "") -> None:
        self.provider = provider
        self.model = model
        self.models = list(models)
        if self.models:
            listed = f"valid models: {', '.join(self.models)}"
        else:
            listed = detail or "its model list could not be read"
        super().__init__(f"Model {model!r} is not supported by {provider}; {listed}")


class AnswerMissingError(PizzagptError):
    """Answers come only from the answer file (``answers_only``), and it has none for this
    question: nothing was sent."""


class ProviderError(PizzagptError):
    """A provider class failed in a way of its own (an exception not of this package)."""


class TransportError(PizzagptError):
    """The request did not get an HTTP answer."""


class ConnectError(TransportError):
    """The connection to the service (or the proxy) could not be made."""


class RequestTimeoutError(TransportError):
    """The connect or the total timeout ran out."""


class ConnectionLostError(TransportError):
    """The server closed the connection before the whole answer arrived."""


class ResponseError(PizzagptError):
    """An HTTP answer arrived but it is not a usable answer."""


class HTTPStatusError(ResponseError):
    """The service answered with a 4xx or 5xx status; ``detail`` is what it said, if anything."""

    def __init__(
        self,
        status: int,
        reason: str,
        url: str,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        self.status = status
        self.reason = reason
        self.url = url
        self.retry_after = retry_after
        self.detail = detail
        message = f"HTTP {status} {reason} from {url}".replace("  ", " ").strip()
        super().__init__(f"{message}: {detail}" if detail else message)


class AuthenticationError(HTTPStatusError):
    """The endpoint refused the API key (401 or 403); the message names its variable."""

    def __init__(self, status: int, reason: str, url: str, message: str) -> None:
        super().__init__(status, reason, url)
        self.args = (message,)


class RedirectError(ResponseError):
    """The service redirected with 301, 302 or 303, which would turn the POST into a GET."""

    def __init__(self, status: int, url: str, location: str) -> None:
        self.status = status
        self.url = url
        self.location = location
        super().__init__(
            f"{url} redirected ({status}) to {location or 'nowhere'}; a {status} redirect "
            "would turn the question (a POST) into a GET, so it is not followed: use the "
            "new address as the base URL"
        )


class NonJSONResponseError(ResponseError):
    """The body is not JSON (an HTML block or error page, most often)."""

    def __init__(self, content_type: str, excerpt: str) -> None:
        self.content_type = content_type
        self.excerpt = excerpt
        shown = " ".join(excerpt.split())
        super().__init__(
            f"Expected a JSON answer but got {content_type or 'no content type'}: {shown!r}"
        )


class ResponseShapeError(ResponseError):
    """The JSON does not have the ``{"answer": {"content": "..."}}`` shape."""

    def __init__(self, detail: str, payload: Any = None) -> None:
        self.payload = payload
        super().__init__(f"Unexpected answer shape: {detail}")


class EmptyAnswerError(ResponseError):
    """The answer's content is missing, empty or only white space; ``finish_reason`` is the
    reason the endpoint gave for ending it (``"tool_calls"``, ``"length"``), when it gave one."""

    finish_reason: str | None = None


class AnswerTooLargeError(ResponseError):
    """One streamed event, or the whole answer, is over its size limit; ``partial`` holds the
    text that arrived before it."""


class MisuseError(ResponseError, ValueError):
    """The service refused the request as misuse; ``str()`` is the service's own text."""


class AnswerFormatError(ResponseError, ValueError):
    """The answer arrived, but holds no value of the format asked for (JSON for ``-f json``).

    ``text`` is the answer as it came, so nothing the model said is lost.
    """

    def __init__(self, message: str, text: str) -> None:
        self.text = text
        super().__init__(message)


class SchemaError(AnswerFormatError):
    """The answer is not JSON, or its JSON does not fit the schema, even after the repair asked
    for; ``field`` names where it went wrong (``""`` for the whole answer), ``text`` is the
    answer as it came."""

    def __init__(self, message: str, text: str, field: str = "") -> None:
        self.field = field
        super().__init__(message, text)


class SchemaSpecError(PromptError):
    """A schema that cannot be read: a concise spec with a bad field, a dict that is not a
    JSON Schema of an object, or something that is no schema at all. Nothing is sent."""


class BatchError(PizzagptError):
    """Some items of a batch failed; the others' answers are in ``results``.

    ``errors`` maps each failed item's index to its exception; ``results`` holds one entry per
    prompt, the answer text or, for a failed item, the exception.
    """

    def __init__(self, errors: dict[int, BaseException], results: list[Any]) -> None:
        self.errors = dict(errors)
        self.results = list(results)
        first = sorted(self.errors.items())[:3]
        listed = "; ".join(f"#{i}: {type(e).__name__}: {e}" for i, e in first)
        more = f"; and {len(self.errors) - 3} more" if len(self.errors) > 3 else ""
        super().__init__(
            f"{len(self.errors)} of {len(self.results)} prompts failed ({listed}{more})"
        )


class JobError(PizzagptError):
    """A provider batch job failed (validation, lost results), or could not be made."""


class BatchAPIUnavailable(JobError, ConfigurationError):
    """The backend has no Batch API: Pizzagpt, a provider class, or an endpoint without one."""


class JobLineError(JobError):
    """One line of a batch job failed, expired or was cancelled: the provider's reason."""


class BudgetExceededError(PizzagptError):
    """A cost limit (``--max-cost``, ``max_cost=``, ``PizzaMagics.budget``) stopped a batch
    before a request that could take the total past it; every answer received is kept.

    ``spent`` and ``limit`` are US dollars; ``results`` holds one entry per prompt, as
    ``BatchError``'s does, None for a prompt that was not asked.
    """

    def __init__(
        self, message: str, *, spent: float, limit: float, results: list[Any] | None = None
    ) -> None:
        self.spent = spent
        self.limit = limit
        self.results = list(results or [])
        super().__init__(message)


class ToolError(PizzagptError):
    """A tool call that cannot run: an unknown tool, an argument that is not allowed. Inside the
    tool loop its one-line message is the call's result, sent back to the model."""


class ToolRoundsError(ToolError):
    """The model was still calling tools when the last round allowed was spent
    (``PizzaMagics.tool_rounds``); ``calls`` holds the records of every call that ran."""

    def __init__(self, message: str, calls: list[Any] | None = None) -> None:
        self.calls = list(calls or [])
        super().__init__(message)
