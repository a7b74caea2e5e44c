"""Example: meter the energy of code completions, phase by phase."""

import ast


def test_completion_energy(energy, code_prompt, function_stops):
    generation = energy.generate(code_prompt, max_new_tokens=64, stop=function_stops)

    # Every new token after the first is a decode step; the first comes out of
    # the prompt's forward pass.
    assert generation.prefill.tokens == generation.prompt_tokens
    assert generation.decode.tokens == generation.new_tokens - 1
    assert generation.total_joules > 0


def test_longer_prompt_costs_more_prefill(energy, function_stops):
    short = "def add(a, b):\n"
    long = "# utilities\n" * 40 + short
    first = energy.generate(short, max_new_tokens=8, stop=function_stops)
    second = energy.generate(long, max_new_tokens=8, stop=function_stops)
    assert second.prompt_tokens > first.prompt_tokens


def test_syntax_check_energy(energy, code_prompt, function_stops):
    generation = energy.generate(code_prompt, max_new_tokens=32, stop=function_stops)
    # energy.measure meters any block. Parsing is safe; generated code is
    # never executed in the test process.
    with energy.measure("parse completion") as block:
        try:
            ast.parse(code_prompt + generation.text)
        except SyntaxError:
            pass
    assert block.energy is not None and block.energy.seconds > 0
