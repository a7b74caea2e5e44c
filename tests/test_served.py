"""Served models, against a real vLLM server on the CPU (tests/vllm_server.py)."""

import json
import os
import subprocess
import sys
import time

import pytest

from pytest_llm_energy.backends.base import BackendLoadError
from pytest_llm_energy.backends.served import ServedBackend, ServedError, parse_spec
from pytest_llm_energy.meters import EstimateMeter
from pytest_llm_energy.runner import STOP_LENGTH, STOP_OBSERVER, GenerationConfig, generate
from pytest_llm_energy.serve import ProcessTreeCpu
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


def test_a_server_that_exits_at_start_is_one_usage_error_with_its_output(pytester):
    pytester.makepyfile("def test_x(energy):\n    energy.generate('x', max_new_tokens=1)\n")
    command = f"{sys.executable} -c \"import sys; print('address already in use'); sys.exit(3)\""
    result = pytester.runpytest("--energy-model=openai:http://127.0.0.1:9/v1", f"--energy-serve={command}")
    result.stderr.fnmatch_lines(["ERROR: --energy-serve: the server exited with status 3 before it was ready; "
                                 "its last output: address already in use"])


def test_a_server_that_never_answers_is_stopped_and_reported(pytester):
    pytester.makepyfile("def test_x(energy):\n    energy.generate('x', max_new_tokens=1)\n")
    marker = "llm-energy-never-ready-%d" % os.getpid()
    command = f"{sys.executable} -c \"import time; print('loading', flush=True); time.sleep(120)\" {marker}"
    started = time.monotonic()
    result = pytester.runpytest("--energy-model=openai:http://127.0.0.1:9/v1", f"--energy-serve={command}",
                                "--energy-serve-timeout=1")
    assert time.monotonic() - started < 15
    result.stderr.fnmatch_lines(["ERROR: --energy-serve: the server did not answer http://127.0.0.1:9/health "
                                 "within 1 s (--energy-serve-timeout); its last output: loading"])
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, marker)]


def _cmdline_has(pid, text):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return text.encode() in handle.read()
    except OSError:
        return False


def test_serve_needs_a_served_model_url_and_one_process(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--energy-serve=vllm serve x")
    result.stderr.fnmatch_lines(["ERROR: --energy-serve starts a server: say where it listens with *"])
    result = pytester.runpytest("--energy-serve=vllm serve x", "--energy-model=openai:http://127.0.0.1:9/v1",
                                "-n", "2")
    result.stderr.fnmatch_lines(["ERROR: --energy-serve starts one server per run; it does not combine with *"])


def test_the_process_tree_s_cpu_time_is_followed():
    # A child that starts a grandchild; both burn CPU.
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time\\nt = time.process_time()\\n"
              "while time.process_time() - t < 0.4: pass'])\n"
              "t = time.process_time()\nwhile time.process_time() - t < 0.2: pass\nchild.wait()\ntime.sleep(5)\n")
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        tree = ProcessTreeCpu(parent.pid)
        before = tree()
        deadline = time.monotonic() + 10
        while tree() - before < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree() - before >= 0.5  # the grandchild's 0.4 s and the parent's 0.2 s, not just one
        assert tree() >= before        # and it never goes back
    finally:
        parent.kill()
        parent.wait()


def test_the_plugin_serves_meters_and_fingerprints_a_real_vllm_run(pytester, vllm, tmp_path):
    # A second server, started by the plugin for the run (vllm's own is the fixture's).
    from vllm_server import free_port, server_command

    port = free_port()
    command = server_command(vllm.python, vllm.model_dir, port)
    pytester.makepyfile(
        "def test_gen(energy):\n"
        "    result = energy.generate('def f():', max_new_tokens=16)\n"
        "    assert result.new_tokens == 16 or result.stop_reason == 'eos'\n"
        "    assert result.prefill.joules > 0 and result.decode.joules > 0\n")
    report = tmp_path / "energy.json"
    result = pytester.runpytest_subprocess(
        f"--energy-model=openai:http://127.0.0.1:{port}/v1", "--energy-serve=" + command,
        "--energy-meter=estimate", f"--energy-json={report}", "--energy-serve-timeout=240",
        timeout=400)
    result.assert_outcomes(passed=1)
    document = json.loads(report.read_text())
    model = document["session"]["model"]
    assert model["served_model"] == "tiny" and model["server_version"] == "0.32.0"
    assert model["server_command"] == command
    assert any("server's process tree" in note for note in document["session"]["notices"])
    # The server was stopped with the run.
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, f"--port {port}".replace(" ", "\0"))]


def test_a_refused_request_fails_its_test_with_one_line_and_records_nothing(pytester, vllm, tmp_path):
    pytester.makepyfile(
        "def test_too_long(energy):\n"
        "    energy.generate('def f():', max_new_tokens=5000)\n"   # over the server's 2048-token context
        "def test_fine(energy):\n"
        "    energy.generate('def f():', max_new_tokens=4)\n")
    report = tmp_path / "energy.json"
    result = pytester.runpytest_subprocess(f"--energy-model=openai:{vllm.url}", "--energy-meter=estimate",
                                           f"--energy-json={report}", timeout=120)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*served model: http://127.0.0.1:*/v1/completions answered 400*"])
    assert "Traceback" not in result.stdout.str()
    results = json.loads(report.read_text())["results"]
    assert [r["test_id"].split("::")[-1] for r in results] == ["test_fine"]
    assert all(r["prefill"]["joules"] > 0 for r in results)


def test_humaneval_longbench_amplification_and_suppression_run_on_a_served_model(pytester, vllm, monkeypatch):
    from conftest import SHARED

    monkeypatch.setenv("LONGBENCH_DIR", str(SHARED / "longbench"))
    pytester.makepyfile(
        "import pytest\n"
        "@pytest.mark.humaneval(tasks='0-1')\n"
        "def test_humaneval(humaneval_case):\n"
        "    result = humaneval_case.run()\n"
        "    assert result.extra['check_status'] in ('passed', 'failed', 'timeout', 'error')\n"
        "@pytest.mark.longbench(subset='lcc', limit=1, languages=['python'])\n"
        "def test_longbench(longbench_case):\n"
        "    result = longbench_case.run()\n"
        "    assert result.prompt_tokens <= 2048\n"   # truncated to the server's context
        "def test_amplification(energy):\n"
        "    bins = energy.amplification(bins=(128, 512, 4096), new_tokens=8, repeats=1)\n"
        "    assert [b.prompt_tokens for b in bins] == [128, 512]\n")  # 4096 does not fit the server
    result = pytester.runpytest_subprocess(f"--energy-model=openai:{vllm.url}", "--energy-meter=estimate",
                                           "--babbling=tests", "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*tests *pass@1=*"])


@pytest.fixture
def fake_server():
    from fake_openai import FakeOpenAI

    server = FakeOpenAI()
    yield server
    server.close()


@pytest.mark.parametrize("mode, message", [
    ("503", r"/v1/completions answered 503: the engine is overloaded"),
    ("cut", r"/v1/completions: the stream (broke off|ended before the server finished it)"),
])
def test_faults_a_real_server_cannot_show_on_demand(fake_server, mode, message):
    backend = ServedBackend.load("openai:" + fake_server.url)
    assert backend.model == "fake" and backend.context_length == 512
    ok = generate(backend, EstimateMeter(), "x", GenerationConfig(max_new_tokens=8))
    assert ok.text == "abcd" and ok.new_tokens == 3 and ok.stop_reason == "eos"
    fake_server.mode = mode
    with pytest.raises(ServedError, match=message):
        generate(backend, EstimateMeter(), "x", GenerationConfig(max_new_tokens=8))


def test_token_counts_equal_the_server_s_usage_and_prefill_grows_with_the_prompt(vllm):
    served = ServedBackend.load("openai:" + vllm.url)
    short = served.encode("def f():")
    long = served.encode("# a comment line\n" * 100 + "def f():")
    chunks = list(served.stream(short, 12, ignore_eos=True))
    usage = next(c.usage for c in chunks if c.usage)
    assert sum(len(c.token_ids) for c in chunks) == usage["completion_tokens"] == 12
    assert usage["prompt_tokens"] == len(short)
    config = GenerationConfig(max_new_tokens=4, ignore_eos=True)
    # Medians of a few: a single request's time varies with the machine's load.
    prefills = {n: sorted(generate(served, EstimateMeter(), "", config, prompt_ids=ids).prefill.seconds
                          for _ in range(5))[2] for n, ids in (("short", short), ("long", long))}
    assert prefills["long"] > prefills["short"]
    result = generate(served, EstimateMeter(), "", config, prompt_ids=long)
    assert result.decode.tokens == result.new_tokens - 1  # every streamed token after the first


def test_humaneval_on_the_server_is_judged_as_in_process(vllm, tiny_backend):
    from pytest_llm_energy.sandbox import Sandbox
    from pytest_llm_energy.tasks.humaneval import HumanEvalSettings, run_case, select_problems

    served = ServedBackend.load("openai:" + vllm.url)
    settings = HumanEvalSettings(max_new_tokens=48)
    with Sandbox(workers=1, timeout=3.0) as box:
        for problem in select_problems("0-2"):
            for mode in ("off", "tests"):
                remote = run_case(problem, mode, served, EstimateMeter(), box, settings)
                local = run_case(problem, mode, tiny_backend, EstimateMeter(), box, settings)
                assert (remote.new_tokens, remote.passed, remote.extra.get("check_status")) == \
                       (local.new_tokens, local.passed, local.extra.get("check_status"))
    assert served.running_requests() == 0


def test_budgets_baselines_and_the_comparison_work_on_a_served_model(pytester, vllm):
    pytester.makepyfile("def test_gen(energy):\n    energy.generate('def f():', max_new_tokens=8)\n")
    common = [f"--energy-model=openai:{vllm.url}", "--energy-meter=estimate", "-p", "no:cacheprovider"]
    saved = pytester.runpytest_subprocess(*common, "--energy-save=main", "--energy-repeat=3", timeout=120)
    saved.assert_outcomes(passed=3)
    document = json.loads(next((pytester.path / ".llm-energy").glob("*_main.json")).read_text())
    assert document["fingerprint"]["served_model"] == "tiny"
    assert document["fingerprint"]["server_version"] == "0.32.0"
    compared = pytester.runpytest_subprocess(*common, "--energy-compare=main", "--energy-repeat=3",
                                             "--energy-budget=1000 J", timeout=120)
    compared.assert_outcomes(passed=3)
    compared.stdout.fnmatch_lines(["comparison with *.llm-energy/0001_main.json"])
    over = pytester.runpytest_subprocess(*common, "--energy-budget=1 mJ", timeout=120)
    assert over.ret != 0
    over.stdout.fnmatch_lines(["*ENERGY GATES*"])


def test_chat_style_streams_chat_completions_and_counts_their_tokens(vllm):
    from pytest_llm_energy.sandbox import Sandbox
    from pytest_llm_energy.tasks.humaneval import HumanEvalSettings, run_case, select_problems

    served = ServedBackend.load("openai:" + vllm.url)
    messages = [{"role": "user", "content": "Write f."}]
    ids = served.encode(messages)  # through the server's chat template
    assert ids == served.encode("Write f.\nAnswer:\n")[1:]  # the template adds no <s>
    chunks = list(served.stream(ids, 10, ignore_eos=True, messages=messages))
    usage = next(c.usage for c in chunks if c.usage)
    assert usage["completion_tokens"] == 10 and "".join(c.text for c in chunks)
    assert sum(len(c.token_ids) for c in chunks) == 10  # per-chunk ids in chat chunks too
    settings = HumanEvalSettings(max_new_tokens=24, prompt_style="chat")
    with Sandbox(workers=1, timeout=3.0) as box:
        result = run_case(select_problems("0")[0], "off", served, EstimateMeter(), box, settings)
    assert result.new_tokens == 24 and result.extra["prompt_style"] == "chat"
    assert result.prefill.joules > 0 and result.decode.joules > 0
