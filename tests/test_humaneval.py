"""HumanEval cases: data, task selection, pass@k, prompting, and end-to-end runs."""

import json

import pytest

from pytest_llm_energy.tasks.humaneval import (
    DEFAULT_STOP,
    extract_code,
    load_problems,
    parse_task_selection,
    pass_at_k,
    pass_at_k_summary,
    truncate_at_stop,
)
from pytest_llm_energy.results import CaseResult, PhaseEnergy


def test_all_164_problems_load_from_the_package_data():
    problems = load_problems()
    assert len(problems) == 164
    assert problems[0]["task_id"] == "HumanEval/0" and problems[163]["task_id"] == "HumanEval/163"
    assert all({"prompt", "test", "entry_point", "canonical_solution"} <= p.keys() for p in problems)


@pytest.mark.parametrize("spec, expected", [
    ("0-3", [0, 1, 2, 3]),
    ("5", [5]),
    (7, [7]),
    ("HumanEval/9", [9]),
    ("1,3-4, 1", [1, 3, 4]),
    ([2, "HumanEval/0"], [2, 0]),
])
def test_task_selection(spec, expected):
    assert parse_task_selection(spec) == expected


def test_task_selection_all():
    assert parse_task_selection("all") == list(range(164))


@pytest.mark.parametrize("spec, message", [
    ("0-200", "outside 0-163"),
    ("three", "cannot read task selection 'three'"),
    ("5-2", "outside"),
    ("", "empty"),
])
def test_bad_task_selection_names_the_bad_part(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_task_selection(spec)


@pytest.mark.parametrize("n, c, k, expected", [
    (1, 1, 1, 1.0),
    (1, 0, 1, 0.0),
    (5, 2, 1, 0.4),           # c / n
    (5, 2, 2, 0.7),           # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
    (3, 3, 2, 1.0),
    (4, 1, 4, 1.0),           # n - c < k
])
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_pass_at_k_summary_averages_over_tasks():
    def result(task, passed):
        phase = PhaseEnergy(1.0, 1.0, 1)
        return CaseResult(task, "humaneval", phase, phase, "m", "estimated", passed=passed)

    summary = pass_at_k_summary([result("A", True), result("A", False), result("B", False), result("B", False)])
    assert summary.tasks == 2 and summary.samples == 2
    assert summary.values[1] == pytest.approx(0.25)
    assert 10 not in summary.values


def test_truncate_at_stop_uses_the_first_stop():
    assert truncate_at_stop("    return 1\n\ndef other():\n    pass\n", DEFAULT_STOP) == "    return 1\n"
    assert truncate_at_stop("    return 1\n", DEFAULT_STOP) == "    return 1\n"


def test_extract_code_from_a_chat_reply():
    problem = {"entry_point": "add", "prompt": "def add(a, b):\n"}
    reply = "Sure!\n```python\ndef add(a, b):\n    return a + b\n```\nThis adds."
    code, start = extract_code(reply, problem)
    assert code == "\ndef add(a, b):\n    return a + b\n"
    assert reply[start:].startswith("def add")
    body, _ = extract_code("```\n    return a + b\n```", problem)
    assert body == "    return a + b\n"
    unclosed, _ = extract_code("```python\ndef add(a, b):\n    return a + b\n", problem)
    assert unclosed.endswith("return a + b\n")


CONFTEST = """
from pytest_llm_energy.backends.hf import HFBackend
from pytest_llm_energy.backends.scripted import ScriptedBackend
from pytest_llm_energy.tasks.humaneval import load_problems

BABBLE = "\\n\\ndef helper(x):\\n    return x * 2\\n\\n\\nprint(helper(3))\\n"


def solution_for(prompt):
    for problem in load_problems()[:8]:
        if "def " + problem["entry_point"] + "(" in prompt:
            if problem["task_id"] == "HumanEval/3":
                return "    return False\\n" + BABBLE  # a wrong answer
            return problem["canonical_solution"] + BABBLE
    return "    pass\\n"


def pytest_llm_energy_make_backend(config, model, device, dtype):
    if model == "scripted":
        return ScriptedBackend(HFBackend.load("builtin:tiny", device="cpu"), solution_for, run_model=True)
"""

TEST = """
import pytest

@pytest.mark.humaneval(tasks="0-3")
def test_humaneval(humaneval_case):
    result = humaneval_case.run()
    assert result.case_id == humaneval_case.task_id
"""


def test_humaneval_with_babbling_both_reports_pass_at_1_and_saving(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", "--energy-model=scripted",
                                "--babbling=both", "--energy-json=he.json")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines([
        "*llm-energy: sandbox *, 2 workers*",
        "*passed*babble tok*",
        "test_humaneval[[]HumanEval/0-bs_off[]]*yes*",
        "test_humaneval[[]HumanEval/3-bs_tests[]]*no*-",
        "HumanEval by babbling mode",
        "off *pass@1=0.750*4*1*",
        "tests *pass@1=0.750*4*1*",
        "suppression (tests vs off): decode energy *%, total energy *%, pass@1 +0.000",
        "babbled (tokens after the first passing line): HumanEval/*[[]off[]]*",
    ])
    document = json.loads((pytester.path / "he.json").read_text())
    cases = {(r["case_id"], r["babbling"]): r for r in document["results"]}
    assert len(cases) == 8
    off, tests = cases[("HumanEval/0", "off")], cases[("HumanEval/0", "tests")]
    assert off["passed"] and tests["passed"]
    assert tests["new_tokens"] < off["new_tokens"]
    assert off["babble_tokens"] > 0
    assert cases[("HumanEval/3", "off")]["passed"] is False
    assert document["gates"] == {"failed": []}
    assert document["session"]["sandbox"]["isolation"] in ("bwrap", "subprocess")


def test_min_pass_at_1_gate_fails_the_session(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", "--energy-model=scripted",
                                "--min-pass-at-1=0.9")
    result.assert_outcomes(passed=4)  # a failing task does not fail its test
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*ENERGY GATES*",
        "FAILED HumanEval pass@1 with babbling=off is 0.750, below --min-pass-at-1=0.9",
    ])


def test_cli_task_override_and_samples(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", "--energy-model=scripted",
                                "--humaneval-tasks=1", "--energy-samples=2", "--energy-temperature=0.8",
                                "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_humaneval[[]HumanEval/1-s0[]]", "*test_humaneval[[]HumanEval/1-s1[]]"])


@pytest.mark.parametrize("args, message", [
    (["--babbling=sometimes"], "ERROR: --babbling='sometimes': expected one of off, stop, tests, both"),
    (["--energy-samples=3"], "ERROR: --energy-samples=3 needs sampling: set --energy-temperature above 0*"),
    (["--humaneval-tasks=0-999"], "ERROR: --humaneval-tasks='0-999': task selection '0-999' is outside 0-163"),
    (["--min-pass-at-1=2"], "ERROR: --min-pass-at-1='2': expected a number in [[]0, 1[]]"),
    (["--energy-prompt-style=poem"], "ERROR: --energy-prompt-style='poem': expected one of base, chat"),
])
def test_bad_humaneval_options_are_usage_errors(pytester, args, message):
    pytester.makepyfile(TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_marker_tasks_is_a_collection_error_naming_them(pytester):
    pytester.makepyfile("""
import pytest

@pytest.mark.humaneval(tasks="zero")
def test_humaneval(humaneval_case):
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*humaneval tasks 'zero': cannot read task selection 'zero'*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_humaneval_case_without_marker_runs_all_tasks(pytester):
    pytester.makepyfile("def test_humaneval(humaneval_case):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*164 tests collected*"])


def test_real_model_on_a_few_tasks(pytester):
    pytester.makepyfile(TEST.replace('"0-3"', '"0-1"'))
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", "--humaneval-max-new-tokens=16",
                                "--energy-json=real.json")
    result.assert_outcomes(passed=2)
    results = json.loads((pytester.path / "real.json").read_text())["results"]
    assert [r["case_id"] for r in results] == ["HumanEval/0", "HumanEval/1"]
    assert all(r["new_tokens"] <= 16 and r["prefill"]["tokens"] == r["prompt_tokens"] for r in results)
    assert all(r["extra"]["check_status"] in ("failed", "passed", "error", "timeout") for r in results)
