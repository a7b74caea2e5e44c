"""Shared prompts for the example energy suite.

Copy this folder into your repository, point ``--energy-model`` at your
assistant's checkpoint and run ``pytest example_suite --energy-json=energy.json``.
"""

import os

import pytest

# Code-completion prompts of the kind an assistant sees in an editor: a
# signature and docstring, to be completed with a function body.
CODE_PROMPTS = {
    "fizzbuzz": (
        "def fizzbuzz(n: int) -> list[str]:\n"
        '    """Return the FizzBuzz sequence from 1 to n."""\n'
    ),
    "is_palindrome": (
        "def is_palindrome(text: str) -> bool:\n"
        '    """True when text reads the same backwards, ignoring case and spaces."""\n'
    ),
    "merge_intervals": (
        "def merge_intervals(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:\n"
        '    """Merge overlapping closed intervals and return them sorted."""\n'
    ),
}

# Where a completion of one function ends: the next top-level statement.
FUNCTION_STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint("]


@pytest.fixture(params=sorted(CODE_PROMPTS))
def code_prompt(request):
    return CODE_PROMPTS[request.param]


@pytest.fixture
def function_stops():
    return list(FUNCTION_STOPS)


def pytest_configure(config):
    # LongBench data comes from --longbench-dir or $LONGBENCH_DIR (LongBench's
    # unzipped data.zip). This example falls back to the small sample that sits
    # beside this repository, when it is there.
    sample = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "longbench")
    if not config.getoption("longbench_dir") and os.path.isdir(sample):
        os.environ.setdefault("LONGBENCH_DIR", os.path.abspath(sample))
