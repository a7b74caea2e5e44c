"""Example: HumanEval pass@1 and energy, with and without babbling suppression.

    pytest example_suite/test_humaneval.py --babbling=both --min-pass-at-1=0.3

Each task is one test; a task the model gets wrong does not fail its test.
Correctness is gated on the run: --min-pass-at-1 fails the session when pass@1
drops, and --babbling-max-accuracy-drop when suppression costs accuracy.
"""

import pytest


@pytest.mark.humaneval(tasks="0-4")
def test_humaneval(humaneval_case):
    result = humaneval_case.run()
    # Every new token is metered: prefill covers the prompt, decode the rest.
    assert result.prefill.tokens == result.prompt_tokens
    assert result.decode.tokens == result.new_tokens - 1
    # The verdict comes from the sandbox, never from running code in pytest.
    assert result.extra["check_status"] in ("passed", "failed", "timeout", "error")
