"""The ``Pizzagpt`` provider: the gpt4free interface over the service's one JSON endpoint.

Compared with the gpt4free original it validates the model, recognises the service's real misuse
wording, turns every malformed answer into a typed error, reuses one keep-alive session per event
loop, and has timeouts and bounded retries.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, ClassVar

from ..errors import (
    EmptyAnswerError,
    MisuseError,
    NonJSONResponseError,
    PromptError,
    ResponseShapeError,
)
from ..transport import (
    Policy,
    _getenv,
    _shown,
    check_proxy,
    check_url,
    env_proxy,
    env_proxy_source,
    parse_retry_after,
    read_body,
    redact,
    send,
)
from .base import (
    AsyncGeneratorProvider,
    AsyncResult,
    FinishReason,
    Messages,
    ProviderModelMixin,
    format_prompt,
)

__all__ = [
    "Pizzagpt",
    "check_proxy",
    "env_proxy",
    "env_proxy_source",
    "parse_answer",
    "parse_retry_after",
    "redact",
]

logger = logging.getLogger(__name__)

#: Statuses worth another try: rate limiting and the gateway's transient failures.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MISUSE_MARKER = "misuse detected"
EXCERPT_CHARS = 200


def parse_answer(
    body: bytes | str, content_type: str = "application/json", charset: str | None = None
) -> str:
    """The answer text in a response body, or the typed error that describes what is wrong.

    Accepts ``{"answer": {"content": ...}}`` and, as the original provider did, ``content`` at
    the top level when ``answer`` is missing.
    """
    text = _decode(body, charset) if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        raise NonJSONResponseError(content_type, text[:EXCERPT_CHARS]) from None
    if not isinstance(data, dict):
        raise ResponseShapeError(f"expected a JSON object, got {type(data).__name__}", data)
    answer = data.get("answer", data)
    if not isinstance(answer, dict):
        raise ResponseShapeError(
            f"'answer' is {type(answer).__name__}, expected an object with 'content'", data
        )
    content = answer.get("content")
    if content is None:
        raise EmptyAnswerError("The service sent an answer without content")
    if not isinstance(content, str):
        raise ResponseShapeError(f"'content' is {type(content).__name__}, expected text", data)
    if not content.strip():
        raise EmptyAnswerError("The service sent an empty answer")
    if MISUSE_MARKER in content.lower():
        raise MisuseError(" ".join(content.split()))
    return content


@functools.lru_cache(maxsize=16)
def _policy(max_retries: int, base: float, ceiling: float, max_retry_after: float) -> Policy:
    return Policy(
        max_retries=max_retries,
        backoff_base=base,
        backoff_max=ceiling,
        max_retry_after=max_retry_after,
        retry_statuses=RETRY_STATUSES,
    )


def _decode(body: bytes, charset: str | None) -> str:
    """The body as text in its declared charset; UTF-8 when none is declared (or it is one
    Python does not know)."""
    if charset:
        try:
            return body.decode(charset, "replace")
        except LookupError:
            logger.debug("unknown charset %r; reading UTF-8", charset)
    return body.decode("utf-8", "replace")


class Pizzagpt(AsyncGeneratorProvider, ProviderModelMixin):
    """Provider for the Pizzagpt service (``gpt-4o-mini``)."""

    url: ClassVar[str] = "https://www.pizzagpt.it"
    api_endpoint: ClassVar[str] = "/api/chatx-completion"
    working: ClassVar[bool] = True
    default_model: ClassVar[str] = "gpt-4o-mini"
    models: ClassVar[list[str]] = [default_model]
    model_aliases: ClassVar[dict[str, str]] = {}

    #: Seconds for the whole request, and for making the connection.
    timeout: ClassVar[float] = 60.0
    connect_timeout: ClassVar[float] = 10.0
    #: Further tries after the first, with exponential backoff and jitter.
    max_retries: ClassVar[int] = 3
    backoff_base: ClassVar[float] = 0.5
    backoff_max: ClassVar[float] = 30.0
    #: A ``Retry-After`` longer than this is not waited for: the error is raised at once.
    max_retry_after: ClassVar[float] = 60.0

    user_agent: ClassVar[str] = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/127.0.0.0 Safari/537.36"
    )

    @classmethod
    def base_url(cls, override: str | None = None) -> str:
        """The service's base URL: ``override``, else ``$PIZZAGPT_URL``, else ``url``.

        A value that is not an http(s) URL is a ``ConfigurationError`` naming where it came
        from."""
        source = "base_url" if override else "PIZZAGPT_URL"
        return check_url(override or _getenv("PIZZAGPT_URL") or cls.url, source)

    @classmethod
    def get_headers(cls, base_url: str) -> dict[str, str]:
        return {
            "accept": "application/json",
            "accept-language": "en-US,en;q=0.9",
            "content-type": "application/json",
            "origin": base_url,
            "referer": f"{base_url}/en",
            "user-agent": cls.user_agent,
            "x-secret": "Marinara",
        }

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: Messages,
        proxy: str | None = None,
        *,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_retries: int | None = None,
        base_url: str | None = None,
        **kwargs: Any,
    ) -> AsyncResult:
        """Yield the answer text, then ``FinishReason("stop")``.

        ``timeout`` and ``connect_timeout`` are in seconds; ``max_retries`` bounds the retries on
        429, 502, 503, 504 and connection failures; ``base_url`` overrides ``$PIZZAGPT_URL`` and
        the class's ``url``. Other keyword arguments are accepted and ignored, as in gpt4free.
        """
        cls.get_model(model)
        prompt = format_prompt(messages)
        if not prompt.strip():
            raise PromptError("The prompt is empty")
        content = await cls.request(
            prompt,
            proxy=proxy,
            timeout=cls.timeout if timeout is None else timeout,
            connect_timeout=cls.connect_timeout if connect_timeout is None else connect_timeout,
            max_retries=cls.max_retries if max_retries is None else max_retries,
            base_url=cls.base_url(base_url),
        )
        yield content
        yield FinishReason("stop")

    @classmethod
    def backoff_delay(cls, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``attempt + 1``: full-jitter exponential backoff, and at
        least ``Retry-After`` when the service sent one."""
        return cls.policy().backoff_delay(attempt, retry_after)

    @classmethod
    def policy(cls, max_retries: int | None = None) -> Policy:
        """The retry policy of this class's settings (made once per settings)."""
        return _policy(
            cls.max_retries if max_retries is None else max_retries,
            cls.backoff_base,
            cls.backoff_max,
            cls.max_retry_after,
        )

    @classmethod
    async def request(
        cls,
        prompt: str,
        *,
        proxy: str | None,
        timeout: float,
        connect_timeout: float,
        max_retries: int,
        base_url: str,
    ) -> str:
        """POST ``prompt`` and return the answer's text, retrying what is worth retrying
        (see ``pizzagpt_magic.transport``)."""
        url = f"{base_url}{cls.api_endpoint}"
        response = await send(
            "POST",
            url,
            cls.policy(max_retries),
            {"question": prompt},
            cls.get_headers(base_url),
            proxy,
            timeout,
            connect_timeout,
        )
        try:
            body = await read_body(response, _shown(url, ()), timeout)
        finally:
            response.release()
        return parse_answer(body, response.content_type, response.charset)
