"""Phase-split generation with the real builtin:tiny model on the CPU."""

import pytest

from pytest_llm_energy.meters import EstimateMeter, Meter, Reading
from pytest_llm_energy.runner import GenerationConfig, IncrementalText, StopStrings, generate

PROMPT = "def add(a, b):\n    return"


class CountingMeter(Meter):
    """Counts reads; each read adds one joule, one second apart."""

    name = "counting"

    def __init__(self):
        super().__init__()
        self.reads = 0

    def read(self):
        self.reads += 1
        return Reading(t=float(self.reads), joules=float(self.reads))


def test_prefill_counts_prompt_tokens_and_decode_the_rest(tiny_backend):
    generation = generate(tiny_backend, EstimateMeter(), PROMPT, GenerationConfig(max_new_tokens=12, ignore_eos=True))
    assert generation.prompt_tokens == len(tiny_backend.encode(PROMPT))
    assert generation.prefill.tokens == generation.prompt_tokens
    assert generation.new_tokens == 12
    assert generation.decode.tokens == generation.new_tokens - 1
    assert generation.stop_reason == "length"
    assert generation.prefill.joules > 0 and generation.decode.joules > 0
    assert generation.prefill.seconds > 0 and generation.decode.seconds > 0


def test_meter_is_read_only_at_the_three_window_edges(tiny_backend):
    meter = CountingMeter()
    generation = generate(tiny_backend, meter, PROMPT, GenerationConfig(max_new_tokens=20, ignore_eos=True))
    assert meter.reads == 3
    assert generation.prefill.joules == 1.0 and generation.decode.joules == 1.0


def test_greedy_decoding_is_deterministic(tiny_backend):
    config = GenerationConfig(max_new_tokens=16, ignore_eos=True)
    first = generate(tiny_backend, EstimateMeter(), PROMPT, config)
    second = generate(tiny_backend, EstimateMeter(), PROMPT, config)
    assert first.token_ids == second.token_ids and first.text == second.text


def test_greedy_matches_transformers_generate(tiny_backend):
    import torch

    ids = tiny_backend.encode(PROMPT)
    config = GenerationConfig(max_new_tokens=10, ignore_eos=True)
    ours = generate(tiny_backend, EstimateMeter(), PROMPT, config)
    with torch.inference_mode():
        reference = tiny_backend.model.generate(
            torch.tensor([ids]), max_new_tokens=10, min_new_tokens=10, do_sample=False,
            pad_token_id=tiny_backend.tokenizer.pad_token_id,
        )
    assert list(ours.token_ids) == reference[0, len(ids):].tolist()


def test_sampling_is_reproducible_with_a_seed_and_varies_across_seeds(tiny_backend):
    def sample(seed):
        config = GenerationConfig(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=seed, ignore_eos=True)
        return generate(tiny_backend, EstimateMeter(), PROMPT, config).token_ids

    assert sample(1) == sample(1)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_stop_string_ends_generation_and_is_cut_from_the_text(tiny_backend):
    free = generate(tiny_backend, EstimateMeter(), "x = ", GenerationConfig(max_new_tokens=24, temperature=1.0,
                                                                           seed=7, ignore_eos=True))
    stop = free.text[6:8]
    assert len(stop) == 2
    config = GenerationConfig(max_new_tokens=24, temperature=1.0, seed=7, ignore_eos=True, stop=(stop,))
    stopped = generate(tiny_backend, EstimateMeter(), "x = ", config)
    assert stopped.stop_reason == "stop"
    assert stopped.text == free.text[: free.text.index(stop)]
    assert stopped.new_tokens < free.new_tokens
    assert stopped.decode.tokens == stopped.new_tokens - 1


def test_eos_ends_generation_and_is_not_in_the_text(tiny_backend, monkeypatch):
    first = generate(tiny_backend, EstimateMeter(), PROMPT, GenerationConfig(max_new_tokens=8, ignore_eos=True))
    # Declare the third generated token an end-of-sequence token.
    monkeypatch.setattr(type(tiny_backend), "eos_token_ids", property(lambda self: frozenset({first.token_ids[2]})))
    ended = generate(tiny_backend, EstimateMeter(), PROMPT, GenerationConfig(max_new_tokens=8))
    cut = first.token_ids.index(first.token_ids[2])
    assert ended.stop_reason == "eos"
    assert ended.new_tokens == cut + 1
    assert ended.text == tiny_backend.decode(first.token_ids[:cut])


def test_single_new_token_has_an_empty_decode_window(tiny_backend):
    generation = generate(tiny_backend, EstimateMeter(), PROMPT, GenerationConfig(max_new_tokens=1))
    assert generation.new_tokens == 1 and generation.decode.tokens == 0


def test_observer_can_end_generation(tiny_backend):
    class AfterFive:
        def __init__(self):
            self.seen = 0

        def on_text(self, text, new_text):
            self.seen += 1
            return len(text) >= 5

    generation = generate(tiny_backend, EstimateMeter(), PROMPT,
                          GenerationConfig(max_new_tokens=30, ignore_eos=True), observers=[AfterFive()])
    assert generation.stop_reason == "observer"
    assert generation.new_tokens == 5


def test_stop_strings_find_a_stop_split_across_fragments():
    stops = StopStrings(["\ndef "])
    text = ""
    for fragment in ["    return 1", "\nd", "ef", " g"]:
        text += fragment
        if stops.on_text(text, fragment):
            break
    assert fragment == " g" and stops.cut_at == len("    return 1")


def test_incremental_text_waits_for_whole_characters():
    class ByteBackend:
        def decode(self, ids):
            return bytes(ids).decode("utf-8", errors="replace")

    text = IncrementalText(ByteBackend())
    emitted = [text.push(b) for b in "aé€b".encode("utf-8")]
    assert "".join(emitted) == "aé€b"
    assert "\ufffd" not in "".join(emitted)
    assert emitted[1] == ""  # first byte of é alone is not a character


def test_generation_config_rejects_bad_values():
    with pytest.raises(ValueError):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ValueError):
        GenerationConfig(top_p=0)
    with pytest.raises(ValueError):
        GenerationConfig(temperature=-1)
