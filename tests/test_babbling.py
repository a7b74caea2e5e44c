"""Where babbling suppression cuts, with a backend that replays known completions."""

import pytest

from pytest_llm_energy.babbling import EndOfFunction, TestsPass, find_passing_prefix, line_prefixes
from pytest_llm_energy.backends.scripted import ScriptedBackend
from pytest_llm_energy.meters import EstimateMeter
from pytest_llm_energy.runner import GenerationConfig, generate
from pytest_llm_energy.sandbox import Sandbox
from pytest_llm_energy.tasks.humaneval import HumanEvalSettings, load_problems, run_case

BABBLE = "\n\ndef helper(x):\n    return x * 2\n\n\nprint(helper(3))\nassert helper(2) == 4\n"
PROBLEM = load_problems()[2]  # truncate_number: "    return number % 1.0\n"
SOLUTION = PROBLEM["canonical_solution"]


@pytest.fixture(scope="module")
def box():
    with Sandbox(workers=2, timeout=3.0) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def babbler(tiny_backend):
    return ScriptedBackend(tiny_backend, SOLUTION + BABBLE)


def chars_to_tokens(backend, text):
    return len(backend.base.tokenizer(text, add_special_tokens=False)["input_ids"])


def settings(**kwargs):
    return HumanEvalSettings(max_new_tokens=400, **kwargs)


def test_off_generates_everything_and_counts_the_babble(babbler, box):
    result = run_case(PROBLEM, "off", babbler, EstimateMeter(), box, settings())
    script_tokens = chars_to_tokens(babbler, SOLUTION + BABBLE)
    assert result.new_tokens == script_tokens + 1  # and the end-of-sequence token
    assert result.stop_reason == "eos"
    assert result.passed  # scoring truncates at "\ndef" as HumanEval harnesses do
    assert result.extra["tokens_to_pass"] == chars_to_tokens(babbler, SOLUTION)
    assert result.babble_tokens == result.new_tokens - chars_to_tokens(babbler, SOLUTION)
    assert result.extra["babble_share"] == pytest.approx(result.babble_tokens / result.new_tokens)


def test_stop_cuts_at_the_first_top_level_line(babbler, box):
    result = run_case(PROBLEM, "stop", babbler, EstimateMeter(), box, settings())
    # "\n\nd": the blank line, then the first character in column 0 ends it.
    assert result.new_tokens == chars_to_tokens(babbler, SOLUTION + "\n\nd")
    assert result.stop_reason == "observer" and result.passed
    assert result.babble_tokens == 3


def test_tests_cuts_exactly_where_the_tests_first_pass(babbler, box):
    meter = EstimateMeter()
    result = run_case(PROBLEM, "tests", babbler, meter, box, settings(background_checks=False))
    assert result.new_tokens == chars_to_tokens(babbler, SOLUTION)
    assert result.babble_tokens == 0 and result.passed
    assert result.extra["suppression_checks"] == 1
    assert result.extra["suppression_check_seconds"] > 0


def test_tests_in_background_cuts_the_text_at_the_same_place(babbler, box):
    config = GenerationConfig(max_new_tokens=400)
    observer = TestsPass(box, PROBLEM, background=True)
    generation = generate(babbler, EstimateMeter(), PROBLEM["prompt"], config, [observer])
    assert generation.text == SOLUTION
    assert observer.cut_at == len(SOLUTION)
    assert generation.stop_reason in ("observer", "eos")


def test_pass_at_1_is_unchanged_by_suppression(babbler, box):
    verdicts = {mode: run_case(PROBLEM, mode, babbler, EstimateMeter(), box, settings()).passed
                for mode in ("off", "stop", "tests")}
    assert verdicts == {"off": True, "stop": True, "tests": True}


def test_wrong_completion_never_passes_and_has_no_babble_count(tiny_backend, box):
    wrong = ScriptedBackend(tiny_backend, "    return 0.25\n" + BABBLE)
    for mode in ("off", "tests"):
        result = run_case(PROBLEM, mode, wrong, EstimateMeter(), box, settings())
        assert result.passed is False and result.babble_tokens is None
    # With nothing passing, tests mode generates as much as off does.
    assert run_case(PROBLEM, "tests", wrong, EstimateMeter(), box, settings()).stop_reason == "eos"


def test_check_time_is_inside_the_decode_window(babbler, box):
    class SlowSandbox:
        workers = 1

        def __init__(self, inner):
            self.inner = inner

        def check(self, problem, completion, timeout=None):
            import time

            time.sleep(0.2)
            return self.inner.check(problem, completion)

    result = run_case(PROBLEM, "tests", babbler, EstimateMeter(), SlowSandbox(box), settings(background_checks=False))
    assert result.decode.seconds >= 0.2


def test_find_passing_prefix_skips_prefixes_that_do_not_compile(box):
    completion = "    x = (1 +\n         2)\n    return number % 1.0\n" + BABBLE
    found = find_passing_prefix(box, PROBLEM, completion)
    assert found.passing_prefix == len("    x = (1 +\n         2)\n    return number % 1.0\n")
    assert found.checks == 2  # "x = (1 +" alone does not compile; "x = (1 + 2)" fails the tests


def test_line_prefixes():
    assert line_prefixes("a\nb\n") == [2, 4]
    assert line_prefixes("a\nb") == [2, 3]
    assert line_prefixes("") == [0]


def test_end_of_function_keeps_indented_and_blank_lines():
    observer = EndOfFunction()
    text = ""
    for fragment in ["    if x:\n", "        return 1\n", "\n", "    return 2\n", "\n", "x"]:
        text += fragment
        if observer.on_text(text, fragment):
            break
    assert fragment == "x" and text[: observer.cut_at] == "    if x:\n        return 1\n\n    return 2\n\n"
