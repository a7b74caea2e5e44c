"""End-to-end runs of the plugin through pytester, on the CPU with builtin:tiny."""

import json

import pytest

GENERATE_TEST = """
def test_generate(energy):
    out = energy.generate("def add(a, b):\\n", max_new_tokens=6, stop=["\\ndef "])
    assert out.prefill.tokens == out.prompt_tokens
    assert out.decode.tokens == out.new_tokens - 1
"""


def run(pytester, *args):
    return pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", *args)


def test_energy_table_and_json(pytester):
    pytester.makepyfile(GENERATE_TEST + """
def test_measure(energy):
    with energy.measure("sum") as block:
        sum(range(200000))
    assert block.energy.joules >= 0
""")
    result = run(pytester, "--energy-json=out/energy.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*llm-energy: model builtin:tiny, meter estimate (estimated)*",
        "*= llm-energy =*",
        "*model builtin:tiny on cpu, meter estimate (estimated)*",
        "test*prefill J*decode J*total J*decode mJ/tok*prompt tok*new tok*seconds*method*source*",
        "*test_generate *read*estimated*",
        "*test_measure [[]sum[]]*read*estimated*",
        "*figures marked 'estimated' come from CPU time x watts per core*",
    ])
    document = json.loads((pytester.path / "out" / "energy.json").read_text())
    assert document["schema"] == "pytest-llm-energy/1"
    session = document["session"]
    assert session["model"]["id"] == "builtin:tiny" and session["model"]["device"] == "cpu"
    assert session["meter"]["name"] == "estimate" and session["meter"]["kind"] == "estimated"
    assert session["versions"]["torch"] and session["exit_status"] == 0
    case, block = document["results"]
    assert case["kind"] == "case" and case["test_id"].endswith("::test_generate")
    assert case["prefill"]["tokens"] == case["prompt_tokens"] == len("def add(a, b):\n") + 1  # <s>
    assert case["decode"]["tokens"] == case["new_tokens"] - 1
    assert case["total_joules"] == pytest.approx(case["prefill"]["joules"] + case["decode"]["joules"])
    assert case["meter_kind"] == "estimated"
    assert block["kind"] == "block" and block["label"] == "sum"
    assert document["totals"]["generations"] == 1
    assert {t["outcome"] for t in document["tests"]} == {"passed"}


def test_json_is_written_when_tests_fail(pytester):
    pytester.makepyfile("""
def test_fails_after_measuring(energy):
    energy.generate("x", max_new_tokens=3)
    assert False, "model got worse"
""")
    result = run(pytester, "--energy-json=e.json")
    result.assert_outcomes(failed=1)
    document = json.loads((pytester.path / "e.json").read_text())
    assert len(document["results"]) == 1
    assert document["tests"][0]["outcome"] == "failed"
    assert document["session"]["exit_status"] == 1
    result.stdout.fnmatch_lines(["*test_fails_after_measuring*estimate*"])


def test_json_keeps_results_of_an_interrupted_test(pytester):
    pytester.makepyfile("""
def test_interrupted(energy):
    energy.generate("x", max_new_tokens=3)
    raise KeyboardInterrupt

def test_never_runs(energy):
    pass
""")
    recorder = pytester.inline_run("-p", "no:cacheprovider", "--energy-meter=estimate", "--energy-json=e.json",
                                   no_reraise_ctrlc=True)
    assert recorder.ret == pytest.ExitCode.INTERRUPTED
    document = json.loads((pytester.path / "e.json").read_text())
    assert [r["test_id"].split("::")[1] for r in document["results"]] == ["test_interrupted"]
    assert document["tests"] == [{"test_id": document["results"][0]["test_id"], "outcome": "interrupted"}]


def test_ini_options_are_equivalent_to_flags(pytester):
    pytester.makeini("""
[pytest]
energy_meter = estimate
energy_cpu_watts = 1000
energy_max_new_tokens = 4
energy_json = from-ini.json
""")
    pytester.makepyfile("""
def test_default_cap(energy):
    out = energy.generate("x")
    assert out.new_tokens <= 4
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    document = json.loads((pytester.path / "from-ini.json").read_text())
    assert document["session"]["meter"]["devices"][0].endswith("1000 W per busy core)")
    # The command line wins over the ini file.
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-max-new-tokens=2", "--energy-json=cli.json")
    result.assert_outcomes(passed=1)
    assert json.loads((pytester.path / "cli.json").read_text())["results"][0]["new_tokens"] <= 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--energy-meter=bogus"], "ERROR: --energy-meter=bogus: unknown energy meter 'bogus'; choose one of: auto, *"),
        (["--energy-model=./no/such/model"], "ERROR: --energy-model=./no/such/model: no such model directory"),
        (["--energy-device=cuda"], "ERROR: --energy-device=cuda but torch sees no CUDA GPU; *"),
        (["--energy-device=tpu"], "ERROR: --energy-device='tpu': expected auto, cpu, cuda or cuda:N"),
        (["--energy-cpu-watts=lots"], "ERROR: --energy-cpu-watts='lots': expected a positive number of watts"),
        (["--energy-cpu-watts=-3"], "ERROR: --energy-cpu-watts='-3': expected a positive number of watts"),
        (["--energy-dtype=int3"], "ERROR: --energy-dtype='int3': expected one of auto, float32, float16, bfloat16"),
        (["--energy-max-new-tokens=0"], "ERROR: --energy-max-new-tokens='0': expected an integer >= 1"),
        (["--energy-meter=rapl", "--energy-rapl-root=/nonexistent"], "ERROR: --energy-meter=rapl: no powercap directory at /nonexistent*"),
        (["--energy-short-windows=guess"], "ERROR: --energy-short-windows='guess': expected one of auto, repeat, split"),
        (["--energy-max-bound=0"], "ERROR: --energy-max-bound='0': expected a percentage in (0, 100]"),
        (["--energy-repeat-seconds=-1"], "ERROR: --energy-repeat-seconds='-1': expected a number of seconds in (0, 60]"),
        (["--energy-mark-bound=x"], "ERROR: --energy-mark-bound='x': expected a percentage >= 0"),
        (["--energy-compare-tolerance=200"], "ERROR: --energy-compare-tolerance='200': expected a percentage in [0, 100]"),
        (["--energy-compare-detect=0"], "ERROR: --energy-compare-detect='0': expected a percentage above 0"),
    ],
)
def test_bad_input_is_one_usage_error_line(pytester, args, message):
    pytester.makepyfile(GENERATE_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_model_that_cannot_load_is_a_usage_error(pytester):
    broken = pytester.mkdir("broken-model")
    (broken / "config.json").write_text("{not json")
    pytester.makepyfile(GENERATE_TEST)
    result = run(pytester, f"--energy-model={broken}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --energy-model={broken}: cannot load model: *"])


def test_model_is_not_loaded_when_no_test_needs_it(pytester):
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = run(pytester, "--energy-model=./missing")
    result.assert_outcomes(passed=1)
    # No model loaded, so no energy section at the end of the run.
    result.stdout.no_fnmatch_line("*= llm-energy =*")


def test_plugin_meter_registered_through_hook_is_selected_by_name(pytester):
    pytester.makeconftest("""
from pytest_llm_energy.meters import Meter, Reading

class WallPlug(Meter):
    name = "wallplug"

    def __init__(self, volts):
        super().__init__()
        self.volts = volts
        self.reads = 0

    def read(self):
        self.reads += 1
        return Reading(t=float(self.reads), joules=2.0 * self.reads)

    def devices(self):
        return [f"wall plug at {self.volts} V"]

def pytest_llm_energy_meters(config):
    return {"wallplug": lambda options: WallPlug(230)}
""")
    pytester.makepyfile(GENERATE_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=wallplug", "--energy-json=w.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*llm-energy: wall plug at 230 V*", "*test_generate*2*2*4*read*measured*"])
    case = json.loads((pytester.path / "w.json").read_text())["results"][0]
    assert case["prefill"]["joules"] == 2.0 and case["decode"]["joules"] == 2.0 and case["meter"] == "wallplug"


def test_plugin_can_be_disabled(pytester):
    pytester.makepyfile("def test_uses_fixture(energy):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:llm_energy")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'energy' not found*"])
    assert "llm-energy" not in result.stdout.str()


def test_lost_gpu_fails_that_test_only_and_json_is_still_written(pytester, monkeypatch):
    import time

    from fake_nvml import FakeGpu, make_fake_pynvml

    # A counter slower than most (500 ms), so the prefill stays below it even on a
    # loaded machine, where a cold first forward pass may take a few hundred ms.
    gpu = FakeGpu(name="NVIDIA Fake L4", trace=[(0.0, 70.0)], counter_period=0.5)
    monkeypatch.setitem(__import__("sys").modules, "pynvml", make_fake_pynvml([gpu], time.perf_counter))
    pytester.makeconftest("""
import sys
import pytest

@pytest.fixture
def lose_gpu():
    sys.modules["pynvml"].gpus[0].lost = True
""")
    pytester.makepyfile("""
def test_a_measures(energy):
    energy.generate("x", max_new_tokens=4)

def test_b_gpu_lost(energy, lose_gpu):
    energy.generate("x", max_new_tokens=4)

def test_c_no_meter():
    assert True
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=nvml", "--energy-json=g.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*llm-energy: GPU 0: NVIDIA Fake L4*",
        "*energy meter 'nvml' failed: NVML reading failed on GPU 0: NVIDIA Fake L4*GPU is lost*",
    ])
    document = json.loads((pytester.path / "g.json").read_text())
    assert [r["test_id"].split("::")[1] for r in document["results"]] == ["test_a_measures"]
    assert document["results"][0]["meter"] == "nvml" and document["results"][0]["meter_kind"] == "measured"


def test_results_cross_xdist_workers(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile("""
import pytest

@pytest.mark.parametrize("n", range(4))
def test_generate(energy, n):
    energy.generate("def f():\\n", max_new_tokens=3 + n)
""")
    result = run(pytester, "-n", "2", "--energy-json=x.json")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*model builtin:tiny on cpu, meter estimate (estimated)*"])
    document = json.loads((pytester.path / "x.json").read_text())
    assert sorted(r["new_tokens"] for r in document["results"]) == [3, 4, 5, 6]
    assert document["session"]["model"]["device"] == "cpu"
    assert len(document["tests"]) == 4


def test_short_gpu_windows_are_repeated_or_marked_never_zero(pytester, monkeypatch):
    import time

    from fake_nvml import FakeGpu, make_fake_pynvml

    # A constant 70 W: any window's true energy is 70 W x its length. The tiny
    # model's prefill takes milliseconds, far below the counter's 100 ms.
    # A counter slower than most (500 ms), so the prefill stays below it even on a
    # loaded machine, where a cold first forward pass may take a few hundred ms.
    gpu = FakeGpu(name="NVIDIA Fake L4", trace=[(0.0, 70.0)], counter_period=0.5)
    monkeypatch.setitem(__import__("sys").modules, "pynvml", make_fake_pynvml([gpu], time.perf_counter))
    pytester.makepyfile("""
def test_short(energy):
    energy.generate("x", max_new_tokens=2)
""")
    # split: read from the window's own edges, the wide bound marked.
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=nvml", "--energy-json=s.json",
                                "--energy-short-windows=split")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "test_short *[0-9]† *counter*measured*",
        "† figure whose error bound exceeds 5% of it*",
    ])
    prefill = json.loads((pytester.path / "s.json").read_text())["results"][0]["prefill"]
    assert prefill["below_resolution"] and prefill["method"] == "counter"
    assert prefill["joules"] > 0
    assert abs(prefill["joules"] - 70.0 * prefill["seconds"]) <= prefill["bound_j"]
    # auto: the prefill is repeated for a second and the figure is bounded tightly.
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=nvml", "--energy-json=a.json",
                                "--energy-repeat-seconds=0.3")
    result.assert_outcomes(passed=1)
    prefill = json.loads((pytester.path / "a.json").read_text())["results"][0]["prefill"]
    assert prefill["method"] == "repeat" and prefill["repeats"] > 10
    assert prefill["joules"] > 0 and prefill["bound_j"] < prefill["joules"]


def test_markdown_junitxml_and_github_step_summary(pytester, monkeypatch):
    summary = pytester.path / "step-summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.makepyfile(GENERATE_TEST)
    result = run(pytester, "--energy-markdown=out/energy.md", "--junitxml=junit.xml")
    result.assert_outcomes(passed=1)
    markdown = (pytester.path / "out" / "energy.md").read_text()
    assert markdown.startswith("## LLM energy\n") and "| test_generate " in markdown
    assert summary.read_text() == "earlier step\n" + markdown  # appended, not overwritten
    import xml.etree.ElementTree as ET

    case = ET.parse(pytester.path / "junit.xml").getroot().find(".//testcase")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert float(properties["energy_total_j"]) > 0
    assert properties["energy_meter"] == "estimate" and properties["energy_source"] == "estimated"
    assert int(properties["energy_prompt_tokens"]) == len("def add(a, b):\n") + 1


# A meter whose every read adds one joule, one second after the last.
COUNTING_METER = """
from pytest_llm_energy.meters import Meter, Reading

class Counting(Meter):
    name = "counting"
    reads = 0

    def read(self):
        Counting.reads += 1
        return Reading(t=float(Counting.reads), joules=float(Counting.reads))

def pytest_llm_energy_meters(config):
    return {"counting": lambda options: Counting()}
"""


def test_repeat_records_each_repetition_after_an_unrecorded_warm_up(pytester):
    pytester.makeconftest(COUNTING_METER)
    pytester.makepyfile(GENERATE_TEST + """
def test_reads():
    from conftest import Counting
    assert Counting.reads == 3 * 4  # warm-up + 3 repetitions, 3 reads each
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=counting", "--energy-repeat=3",
                                "--energy-repeat-order=back-to-back", "--energy-json=r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*energies are medians over 3 repetitions after a warm-up (--energy-repeat)"])
    results = json.loads((pytester.path / "r.json").read_text())["results"]
    assert [r["repeat"] for r in results] == [0, 1, 2]
    assert len({r["case_id"] for r in results}) == 1


def test_repeat_in_rounds_runs_the_suite_once_per_round(pytester):
    pytester.makeconftest(COUNTING_METER)
    pytester.makepyfile("""
import pytest

@pytest.mark.parametrize("n", [1, 2])
def test_gen(energy, n):
    energy.generate("x" * n, max_new_tokens=2)
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "--energy-meter=counting", "--energy-repeat=3",
                                "--energy-json=r.json")
    result.assert_outcomes(passed=6)
    # Round by round: every test once, then every test again.
    order = [line.split(" ")[0].split("::")[1] for line in result.stdout.lines if "::test_gen[" in line
             and "PASSED" in line]
    assert order == [f"test_gen[energy-round-{r}-{n}]" for r in range(3) for n in (1, 2)]
    results = json.loads((pytester.path / "r.json").read_text())["results"]
    # One test id per test, its repetitions numbered by round; the first round warmed up unrecorded.
    assert sorted((r["test_id"].split("::")[1], r["repeat"]) for r in results) == \
        [(f"test_gen[{n}]", r) for n in (1, 2) for r in range(3)]
    result.stdout.fnmatch_lines(["*test_gen[[]1[]] *"])  # the table shows one row per test


def test_help_lists_every_option_with_its_ini_name(pytester):
    from pytest_llm_energy.options import OPTIONS

    result = pytester.runpytest("--help")
    assert result.ret == 0
    text = result.stdout.str()
    assert "energy regression testing of LLMs (pytest-llm-energy)" in text
    for option in OPTIONS:
        assert option.flag in text and option.ini in text
    for flag in ("--energy-budget", "--energy-save", "--energy-compare"):
        assert flag in text


def test_nothing_measured_is_said_when_gates_were_asked_for(pytester):
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = run(pytester, "--energy-budget=1J")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*= llm-energy =*", "no energy was measured (no test used the energy fixture)"])
    assert result.ret == 0


def test_totals_by_suite(pytester):
    pytester.makepyfile(GENERATE_TEST + """
def test_block(energy):
    with energy.measure("b"):
        pass
""")
    result = run(pytester)
    result.stdout.fnmatch_lines(["by suite and babbling mode: prompt * J (1), measure blocks * J (1)"])
