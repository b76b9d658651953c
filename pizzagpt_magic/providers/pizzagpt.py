"""The ``Pizzagpt`` provider: the gpt4free interface over the service's one JSON endpoint.

Compared with the gpt4free original it validates the model, recognises the service's real misuse
wording, turns every malformed answer into a typed error, reuses one keep-alive session per event
loop, and has timeouts and bounded retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import random
import re
import time
from typing import Any, ClassVar

from ..errors import (
    ConnectError,
    ConnectionLostError,
    EmptyAnswerError,
    HTTPStatusError,
    MisuseError,
    NonJSONResponseError,
    PromptError,
    RequestTimeoutError,
    ResponseShapeError,
    TransportError,
)
from .base import (
    AsyncGeneratorProvider,
    AsyncResult,
    FinishReason,
    Messages,
    ProviderModelMixin,
    format_prompt,
)

__all__ = ["Pizzagpt", "env_proxy", "parse_answer", "parse_retry_after", "redact"]

logger = logging.getLogger(__name__)

#: Statuses worth another try: rate limiting and the gateway's transient failures.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MISUSE_MARKER = "misuse detected"
EXCERPT_CHARS = 200

_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with URL credentials (``scheme://user:pass@``) and the given secrets masked."""
    text = _USERINFO.sub("***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _proxy_secrets(proxy: str | None) -> tuple[str | None, ...]:
    if not proxy:
        return ()
    from yarl import URL

    url = URL(proxy)
    return (url.raw_user, url.raw_password, url.user, url.password)


def _proxy_variable(name: str) -> str | None:
    # urllib's precedence: the lower-case variable wins; HTTP_PROXY is ignored under CGI.
    value = os.environ.get(name)
    if value is None and not (name == "http_proxy" and "REQUEST_METHOD" in os.environ):
        value = os.environ.get(name.upper())
    return value or None


def env_proxy(url: str) -> str | None:
    """The proxy the standard variables (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``, either case) choose for ``url``, or None.

    Read on every request with a few direct look-ups: aiohttp's ``trust_env`` would scan the
    whole environment (and read ``.netrc``, which the service never needs) in a worker thread,
    twice a request.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    proxy = _proxy_variable(f"{parts.scheme}_proxy") or _proxy_variable("all_proxy")
    if proxy is None:
        return None
    no_proxy = _proxy_variable("no_proxy")
    if no_proxy:
        from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

        if proxy_bypass_environment(parts.hostname or "", {"no": no_proxy}):
            return None
    return proxy


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def parse_answer(body: bytes | str, content_type: str = "application/json") -> str:
    """The answer text in a response body, or the typed error that describes what is wrong.

    Accepts ``{"answer": {"content": ...}}`` and, as the original provider did, ``content`` at
    the top level when ``answer`` is missing.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
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
        """The service's base URL: ``override``, else ``$PIZZAGPT_URL``, else ``url``."""
        return (override or os.environ.get("PIZZAGPT_URL") or cls.url).rstrip("/")

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
        ceiling = min(cls.backoff_max, cls.backoff_base * (2**attempt))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

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
        """POST ``prompt`` and return the answer's text, retrying what is worth retrying."""
        import aiohttp

        from ..session import get_session, pause_requests, wait_until_allowed

        url = f"{base_url}{cls.api_endpoint}"
        proxy = proxy or env_proxy(url)
        shown_url = redact(url)
        secrets = _proxy_secrets(proxy)
        client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        headers = cls.get_headers(base_url)
        attempt = 0
        while True:
            session = await get_session()
            await wait_until_allowed()
            retry_after: float | None = None
            rate_limited = False
            try:
                logger.debug("POST %s (attempt %d)", shown_url, attempt + 1)
                async with session.post(
                    url,
                    json={"question": prompt},
                    headers=headers,
                    proxy=proxy,
                    timeout=client_timeout,
                ) as response:
                    if response.status >= 400:
                        length = response.content_length
                        if length is not None and length <= 65536:
                            # A small error body read to its end leaves the connection
                            # reusable, so a retry needs no new handshake.
                            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                                await response.read()
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
                        error: Exception = HTTPStatusError(
                            response.status, response.reason or "", shown_url, retry_after
                        )
                        retryable = response.status in RETRY_STATUSES
                        rate_limited = response.status == 429
                    else:
                        try:
                            body = await response.read()
                        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                            raise ConnectionLostError(
                                redact(
                                    f"The connection to {shown_url} was lost while the "
                                    f"answer was arriving ({exc})",
                                    *secrets,
                                )
                            ) from None
                        return parse_answer(body, response.content_type)
            except asyncio.CancelledError:
                raise
            except (
                aiohttp.ServerTimeoutError,
                aiohttp.ClientConnectorError,
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError,
            ) as exc:
                error = ConnectError(
                    redact(f"Cannot reach {shown_url}: {_describe(exc)}", *secrets)
                )
                retryable = True
            except asyncio.TimeoutError:
                raise RequestTimeoutError(
                    f"No answer from {shown_url} within {timeout:g} s"
                ) from None
            except aiohttp.ClientHttpProxyError as exc:
                raise ConnectError(
                    redact(f"The proxy refused the request: {exc.status} {exc.message}", *secrets)
                ) from None
            except aiohttp.InvalidURL as exc:
                raise ConnectError(redact(f"Invalid URL: {exc}", *secrets)) from None
            except aiohttp.ClientError as exc:
                raise TransportError(
                    redact(f"Request to {shown_url} failed: {_describe(exc)}", *secrets)
                ) from None
            too_long = retry_after is not None and retry_after > cls.max_retry_after
            if not retryable or attempt >= max_retries or too_long:
                raise error
            delay = cls.backoff_delay(attempt, retry_after)
            if rate_limited:
                pause_requests(delay)
            logger.info("%s; retrying in %.2f s", error, delay)
            attempt += 1
            await asyncio.sleep(delay)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
