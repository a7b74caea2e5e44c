"""Example: code completion with long repository context (LongBench lcc, repobench-p).

    pytest example_suite/test_longbench.py --longbench-dir=PATH/TO/LongBench/data --min-code-sim=0.5

Long prompts make prefill expensive and every later decode token costlier; the
summary shows decode energy per token by prompt length.
"""

import pytest


@pytest.mark.longbench(subset="lcc", limit=3, languages=["python"])
def test_next_line_of_a_file(longbench_case):
    result = longbench_case.run()
    assert 0.0 <= result.score <= 1.0
    assert result.prefill.tokens == result.prompt_tokens


@pytest.mark.longbench(subset="repobench-p", limit=2)
def test_next_line_with_cross_file_context(longbench_case):
    longbench_case.run()


def test_amplification(energy):
    # Decode energy per token after prompts of growing length (same 16 new tokens each).
    bins = energy.amplification(bins=(128, 512, 2048), new_tokens=16, repeats=2)
    assert bins[0].amplification == 0
