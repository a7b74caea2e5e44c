"""A model behind an OpenAI-compatible HTTP server (vLLM, SGLang, TGI, a llama.cpp server).

Selected with ``--energy-model=openai:http://HOST:PORT/v1``. The served model's
name comes from ``/v1/models`` (or ``--energy-served-model``); an API key from
the environment variable ``--energy-api-key-env`` names (``OPENAI_API_KEY``),
which never appears in reports, baselines or errors.

Generation streams ``/v1/completions`` with usage reporting on; the runner
marks the prefill window from sending the request to the first streamed token
and the decode window from there to the last one (:func:`runner.generate`).
Those windows hold more than the in-process ones: the HTTP round trip, the
server's queueing and detokenisation.

Only the standard library is used: ``http.client`` for requests (one fresh
connection each, nothing between the stream and the clock), server-sent
events parsed by hand.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

from .base import BackendLoadError, ServedError, StreamingBackend

PREFIX = "openai:"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_TIMEOUT_S = 60.0
MAX_ERROR_CHARS = 300
# After a stream ends, how long to wait for the server to report no running request.
IDLE_WAIT_S = 2.0
IDLE_POLL_S = 0.005


@dataclass
class StreamChunk:
    """What one server-sent event of a completion stream carried."""

    text: str = ""
    token_ids: tuple[int, ...] = ()
    finish_reason: Optional[str] = None
    stop_reason: Any = None          # vLLM: the stop string or token that ended it (None: EOS)
    usage: dict[str, Any] = field(default_factory=dict)


def parse_spec(spec: str) -> str:
    """The base URL (ending in /v1) of ``openai:URL``; a one-line error for anything else."""
    url = spec[len(PREFIX):].strip() if spec.startswith(PREFIX) else spec
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendLoadError(f"--energy-model={spec}: expected openai:http://HOST:PORT/v1")
    try:
        parts.port  # noqa: B018  (raises for a port that is not a number)
    except ValueError:
        raise BackendLoadError(f"--energy-model={spec}: the port is not a number") from None
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class _Response:
    """An answer and its connection: reading, iterating by lines, closing both."""

    def __init__(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self.connection = connection
        self.response = response

    def read(self) -> bytes:
        return self.response.read()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.response)

    def close(self) -> None:
        self.response.close()
        self.connection.close()

    def __enter__(self) -> "_Response":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Stream:
    """An open completion stream: iterate for chunks, ``close()`` to end the request early."""

    def __init__(self, response: Any, where: str) -> None:
        self._response = response
        self._where = where
        self.closed = False
        self.finished = False  # the server sent [DONE]

    def __iter__(self) -> Iterator[StreamChunk]:
        try:
            yield from self._events()
        finally:
            self.close()

    def _events(self) -> Iterator[StreamChunk]:
        try:
            for raw in self._response:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    self.finished = True
                    return
                yield _chunk(json.loads(data))
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if self.closed:
                return  # we closed it
            raise ServedError(f"{self._where}: the stream broke off ({_one_line(exc) or type(exc).__name__})") from None
        if not self.closed:
            # A stream that ends without its [DONE] line was cut, not finished.
            raise ServedError(f"{self._where}: the stream ended before the server finished it")

    @property
    def closed_early(self) -> bool:
        """Whether the request was ended by closing the stream before the server finished it."""
        return self.closed and not self.finished

    def close(self) -> None:
        # Closing the connection is how an OpenAI-compatible server learns to
        # stop (vLLM aborts the request).
        if not self.closed:
            self.closed = True
            self._response.close()


def _chunk(event: dict[str, Any]) -> StreamChunk:
    if "error" in event:
        raise ServedError(f"the server reported an error: {_one_line(event['error'])}")
    usage = event.get("usage") or {}
    choices = event.get("choices") or []
    if not choices:
        return StreamChunk(usage=usage)
    choice = choices[0]
    ids = choice.get("token_ids") or ()
    # A chat chunk carries its text in delta.content.
    text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
    return StreamChunk(text=text, token_ids=tuple(int(i) for i in ids),
                       finish_reason=choice.get("finish_reason"), stop_reason=choice.get("stop_reason"),
                       usage=usage)


def _one_line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text[:MAX_ERROR_CHARS]


class ServedBackend(StreamingBackend):
    """The model under test, served over HTTP; generation streams (see :meth:`stream`).

    A server cannot run one forward pass again: short phases are split by the
    meter's curves, never repeated (``can_repeat`` is False).
    """

    device = "server"

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = DEFAULT_TIMEOUT_S,
                 spec: str = "") -> None:
        self.base_url = base_url
        self.root = base_url[: -len("/v1")]
        self.model = model
        self.model_id = spec or PREFIX + base_url
        self._api_key = api_key
        self.timeout = timeout
        self.version: Optional[str] = None
        self.server_command: Optional[str] = None  # --energy-serve's, for the run's fingerprint
        self.context_length: Optional[int] = None  # /v1/models' max_model_len, where the server says
        # After the first failure (refused, died) every later request fails at
        # once with the same reason, instead of each waiting for its timeout.
        self.broken: Optional[str] = None

    # -- loading ---------------------------------------------------------------
    @classmethod
    def load(cls, spec: str, served_model: str = "", api_key_env: str = DEFAULT_API_KEY_ENV,
             timeout: float = DEFAULT_TIMEOUT_S) -> "ServedBackend":
        base = parse_spec(spec)
        backend = cls(base, served_model, os.environ.get(api_key_env, "") if api_key_env else "", timeout, spec)
        try:
            listed = backend._get_json("/v1/models").get("data") or []
        except ServedError as exc:
            raise BackendLoadError(f"--energy-model={spec}: {exc}") from None
        models = {str(m.get("id")): m for m in listed if isinstance(m, dict) and m.get("id")}
        names = list(models)
        if served_model:
            if names and served_model not in names:
                raise BackendLoadError(f"--energy-model={spec}: the server does not serve {served_model!r} "
                                       f"(it serves {', '.join(names)})")
        elif len(names) == 1:
            backend.model = names[0]
        else:
            raise BackendLoadError(f"--energy-model={spec}: the server serves "
                                   f"{', '.join(names) if names else 'no model'}; "
                                   "choose one with --energy-served-model=NAME")
        length = models.get(backend.model, {}).get("max_model_len")
        backend.context_length = int(length) if isinstance(length, int) and length > 0 else None
        try:
            backend.version = str(backend._get_json("/version").get("version") or "") or None
        except ServedError:
            backend.version = None  # not every server has /version
        return backend

    # -- HTTP ------------------------------------------------------------------
    def _request(self, path: str, body: Optional[dict[str, Any]] = None, stream: bool = False) -> "_Response":
        """One HTTP request on a fresh connection (``http.client``: nothing between the stream and the clock)."""
        if self.broken:
            raise ServedError(self.broken)
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = "Bearer " + self._api_key
        parts = urllib.parse.urlsplit(self.root)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(parts.hostname, parts.port, timeout=self.timeout)
        try:
            connection.request("POST" if data is not None else "GET", parts.path + path, body=data, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            self.broken = f"the server at {self.root} cannot be reached ({_one_line(exc) or type(exc).__name__})"
            raise ServedError(self.broken) from None
        if response.status >= 400:
            detail = self._error_detail(response)
            connection.close()
            raise ServedError(f"{self.root}{path} answered {response.status}{': ' + detail if detail else ''}")
        return _Response(connection, response)

    def _error_detail(self, response: Any) -> str:
        try:
            body = json.loads(response.read().decode("utf-8", "replace") or "{}")
        except (OSError, ValueError, http.client.HTTPException):
            return ""
        message = body.get("message") or (body.get("error") or {}).get("message") if isinstance(body, dict) else ""
        return self._redact(_one_line(message or ""))

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _get_json(self, path: str) -> dict[str, Any]:
        with self._request(path) as response:
            try:
                value = json.loads(response.read().decode("utf-8", "replace") or "{}")
            except ValueError:
                raise ServedError(f"{self.root}{path} did not answer JSON") from None
        return value if isinstance(value, dict) else {"data": value}

    def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._request(path, body) as response:
            return json.loads(response.read().decode("utf-8", "replace") or "{}")

    # -- the model ---------------------------------------------------------------
    # Chat-style prompts are sent as messages to /v1/chat/completions.
    chats = True

    def encode(self, text: Any) -> list[int]:
        """The server's own token ids (``/tokenize``), so prompt lengths are exact; chat messages through its template."""
        body: dict[str, Any] = {"model": self.model}
        if isinstance(text, list):
            body.update(messages=text, add_generation_prompt=True)
        else:
            body["prompt"] = text
        try:
            tokens = self._post_json("/tokenize", body).get("tokens")
        except ServedError as exc:
            raise ServedError(f"{exc} (the server needs a /tokenize endpoint for exact prompt lengths)") from None
        return [int(t) for t in tokens or []]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._post_json("/detokenize", {"model": self.model, "tokens": list(ids)}).get("prompt", ""))

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset()  # the server ends at EOS itself (finish_reason "stop")

    def stream(self, prompt_ids: Sequence[int], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               seed: int = 0, stop: Sequence[str] = (), ignore_eos: bool = False,
               messages: Optional[list] = None) -> _Stream:
        """Open a completion stream of ``prompt_ids`` (sent as ids: the prompt is exactly what was encoded).

        With ``messages`` it is a chat completion of them instead (the server's template).
        """
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "stream": True,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
        }
        if stop:
            body["stop"] = list(stop)
        if ignore_eos:
            body["ignore_eos"] = True
        if messages is not None:
            body["messages"] = messages
            path = "/v1/chat/completions"
        else:
            body["prompt"] = list(prompt_ids)
            path = "/v1/completions"
        return _Stream(self._request(path, body, stream=True), f"{self.root}{path}")

    def wait_idle(self, clock: Any, sleep: Any, limit_s: float = IDLE_WAIT_S) -> Optional[bool]:
        """Wait until the server runs no request (a closed stream's request is aborted, not instant).

        True when it said so, False when it still ran one after ``limit_s``,
        None when it does not expose the figure (then nothing is waited for).
        """
        deadline = clock() + limit_s
        while True:
            running = self.running_requests()
            if running is None:
                return None
            if running <= 0:
                return True
            if clock() >= deadline:
                return False
            sleep(IDLE_POLL_S)

    def running_requests(self) -> Optional[float]:
        """Requests the server is running now, from its Prometheus metrics (None: not exposed)."""
        try:
            with self._request("/metrics") as response:
                text = response.read().decode("utf-8", "replace")
        except ServedError:
            return None
        total = None
        for line in text.splitlines():
            if line.startswith("vllm:num_requests_running"):
                try:
                    total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
                except ValueError:
                    continue
        return total

    def describe(self) -> dict[str, Any]:
        return {"id": self.model_id, "served_model": self.model, "server_version": self.version,
                "server_command": self.server_command, "context_length": self.context_length,
                "device": self.device, "windows": "HTTP round trip, server queueing and detokenisation included"}
