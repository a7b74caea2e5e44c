"""Example: meter the energy of code completions, phase by phase."""


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


def test_tokenizer_round_trip_energy(energy, code_prompt):
    # energy.measure meters any block: here, a thousand tokenizer round trips.
    with energy.measure("tokenize x1000") as block:
        for _ in range(1000):
            code_prompt.encode("utf-8").decode("utf-8")
    assert block.energy is not None and block.energy.seconds > 0
