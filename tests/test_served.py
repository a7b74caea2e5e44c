"""Served models, against a real vLLM server on the CPU (tests/vllm_server.py)."""

import json
import time

import pytest

from pytest_llm_energy.backends.base import BackendLoadError
from pytest_llm_energy.backends.served import ServedBackend, ServedError, parse_spec
from pytest_llm_energy.meters import EstimateMeter
from pytest_llm_energy.runner import STOP_LENGTH, STOP_OBSERVER, GenerationConfig, generate
from vllm_server import VllmServer, save_checkpoint, vllm_python


@pytest.fixture(scope="session")
def vllm(tmp_path_factory):
    python = vllm_python()
    if python is None:
        pytest.skip("no vLLM environment (.venv-vllm or LLM_ENERGY_VLLM_PYTHON; .ci/run installs it)")
    root = tmp_path_factory.mktemp("vllm")
    server = VllmServer(python, save_checkpoint(root / "tiny"), root / "server.log")
    try:
        server.wait_ready()
        server.warm_up()
        yield server
    finally:
        server.stop()


def test_spec_parsing_and_bad_urls():
    assert parse_spec("openai:http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert parse_spec("openai:http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    for bad in ("openai:127.0.0.1:8000", "openai:ftp://host/v1", "openai:http://:80/v1", "openai:http://h:port/v1"):
        with pytest.raises(BackendLoadError, match=r"^--energy-model=openai:"):
            parse_spec(bad)


def test_an_unreachable_server_is_one_line_at_once():
    started = time.monotonic()
    with pytest.raises(BackendLoadError, match="cannot be reached") as raised:
        ServedBackend.load("openai:http://127.0.0.1:9/v1")
    assert time.monotonic() - started < 5 and "\n" not in str(raised.value)


def test_the_served_model_and_version_are_found(vllm, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-never-shown")
    backend = ServedBackend.load("openai:" + vllm.url)
    assert backend.model == "tiny" and backend.version == "0.32.0"
    assert "sk-secret" not in json.dumps(backend.describe())
    with pytest.raises(BackendLoadError, match=r"does not serve 'other' \(it serves tiny\)"):
        ServedBackend.load("openai:" + vllm.url, served_model="other")


def test_greedy_stream_matches_the_transformers_backend_token_for_token(vllm, tiny_backend):
    served = ServedBackend.load("openai:" + vllm.url)
    prompt = "def add(a, b):\n    return"
    assert served.encode(prompt) == tiny_backend.encode(prompt)
    config = GenerationConfig(max_new_tokens=24, ignore_eos=True)
    remote = generate(served, EstimateMeter(), prompt, config)
    local = generate(tiny_backend, EstimateMeter(), prompt, config)
    assert remote.token_ids == local.token_ids and remote.text == local.text
    assert remote.new_tokens == 24 and remote.stop_reason == STOP_LENGTH
    assert remote.prompt_tokens == len(tiny_backend.encode(prompt))
    assert remote.prefill.seconds > 0 and remote.decode.seconds > 0
    assert remote.prefill.joules > 0 and remote.decode.joules > 0


class StopAfter:
    """An observer that asks to stop once this many characters have streamed."""

    def __init__(self, chars):
        self.chars = chars

    def on_text(self, text, new_text):
        return len(text) >= self.chars


def test_an_observer_ends_the_request_and_the_server_stops_generating(vllm):
    served = ServedBackend.load("openai:" + vllm.url)
    config = GenerationConfig(max_new_tokens=1500, ignore_eos=True)
    result = generate(served, EstimateMeter(), "def f():", config, observers=[StopAfter(10)])
    assert result.stop_reason == STOP_OBSERVER and result.new_tokens < 100
    assert served.running_requests() == 0  # the decode window closed only once it was


def test_a_server_that_dies_fails_the_next_request_at_once(vllm, tmp_path):
    served = ServedBackend.load("openai:" + vllm.url)
    served.root = "http://127.0.0.1:9"  # as if the server had gone
    with pytest.raises(ServedError, match="cannot be reached"):
        served.encode("x")
    started = time.monotonic()
    with pytest.raises(ServedError, match="cannot be reached"):
        served.stream([1, 2], 4)
    assert time.monotonic() - started < 0.1  # the same reason, no new wait
