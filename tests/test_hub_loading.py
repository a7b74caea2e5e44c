"""A hub id on a machine without network: the cache first, a one-line error within seconds otherwise."""

import shutil
import time

import pytest

from pytest_llm_energy.backends.base import BackendLoadError
from pytest_llm_energy.backends.hf import HFBackend
from pytest_llm_energy.backends.tiny import tiny_model_dir

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    return tmp_path / "hf" / "hub"


def _load_failure(spec):
    started = time.monotonic()
    with pytest.raises(BackendLoadError) as raised:
        HFBackend.load(spec, device="cpu")
    return str(raised.value), time.monotonic() - started


def test_offline_and_not_cached_fails_at_once(empty_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message, seconds = _load_failure("some-org/some-model")
    assert seconds < 5
    assert "not a local directory and not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE" in message and "\n" not in message


def test_no_network_and_not_cached_fails_within_seconds(empty_cache):
    message, seconds = _load_failure("some-org/some-model")
    assert seconds < 5
    assert "cannot be reached" in message and UNREACHABLE in message


def test_a_cached_model_loads_without_the_network(empty_cache):
    # The layout huggingface_hub writes: blobs aside, a snapshot per commit, refs/main naming it.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_cache / "models--some-org--tiny"
    shutil.copytree(tiny_model_dir(), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    backend = HFBackend.load("some-org/tiny", device="cpu")  # the endpoint is unreachable
    assert backend.decode(backend.encode("def f():")) == "def f():"
    assert backend.weights is not None  # fingerprinted from the cached snapshot


def test_the_plugin_turns_it_into_one_usage_error(pytester, empty_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytester.makepyfile("def test_x(energy):\n    energy.generate('x', max_new_tokens=1)\n")
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--energy-model=some-org/some-model", "-p", "no:cacheprovider")
    assert time.monotonic() - started < 30  # the interpreter and torch start; no retries
    result.stderr.fnmatch_lines(["ERROR: --energy-model=some-org/some-model: not a local directory and not in the "
                                 "Hugging Face cache*"])
