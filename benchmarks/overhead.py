"""Overhead of the metered generation loop versus plain ``model.generate``.

The same prompts, greedy, the same number of new tokens, alternating between
the two so drift in machine speed hits both alike. Prints tokens/s of each and
the ratio of metered to plain time (target: <= 1.05).

    python benchmarks/overhead.py [--model builtin:tiny] [--tokens 64] [--rounds 10] [--meter auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pytest_llm_energy.backends.hf import HFBackend
from pytest_llm_energy.meters import MeterOptions, create_meter
from pytest_llm_energy.runner import GenerationConfig, generate

PROMPTS = [
    "def fizzbuzz(n: int) -> list[str]:\n    \"\"\"Return the FizzBuzz sequence from 1 to n.\"\"\"\n",
    "def is_palindrome(text: str) -> bool:\n    \"\"\"True when text reads the same backwards.\"\"\"\n",
    "class Stack:\n    \"\"\"A LIFO stack.\"\"\"\n\n    def __init__(self):\n",
    "import json\n\n\ndef load_config(path):\n",
]


def plain_generate(backend: HFBackend, prompt: str, tokens: int) -> int:
    ids = torch.tensor([backend.encode(prompt)], device=backend.torch_device)
    with torch.inference_mode():
        out = backend.model.generate(
            ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
            pad_token_id=backend.tokenizer.pad_token_id,
        )
    backend.synchronize()
    return out.shape[1] - ids.shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--meter", default="auto")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    backend = HFBackend.load(args.model, device=args.device)
    meter, notices = create_meter(args.meter, MeterOptions())
    meter.start()
    config = GenerationConfig(max_new_tokens=args.tokens, ignore_eos=True)
    for prompt in PROMPTS:  # warm-up: allocator, kernels, caches
        generate(backend, meter, prompt, config)
        plain_generate(backend, prompt, args.tokens)

    metered_s: list[float] = []
    plain_s: list[float] = []
    tokens = 0
    for _ in range(args.rounds):
        for prompt in PROMPTS:
            start = time.perf_counter()
            ours = generate(backend, meter, prompt, config)
            metered_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            theirs = plain_generate(backend, prompt, args.tokens)
            plain_s.append(time.perf_counter() - start)
            assert ours.new_tokens == theirs == args.tokens
            tokens += args.tokens
    meter.close()

    per_run = tokens / len(metered_s)
    metered_med, plain_med = statistics.median(metered_s), statistics.median(plain_s)
    print(f"model {args.model} on {backend.device}, meter {meter.name} ({meter.kind}), "
          f"{len(PROMPTS)} prompts x {args.rounds} rounds, {args.tokens} new tokens each, greedy")
    for note in notices:
        print(f"note: {note}")
    print(f"metered loop   : {per_run / metered_med:8.1f} tokens/s (median {metered_med * 1000:.2f} ms per generation)")
    print(f"model.generate : {per_run / plain_med:8.1f} tokens/s (median {plain_med * 1000:.2f} ms per generation)")
    print(f"ratio metered/plain time: {metered_med / plain_med:.3f}  (total-time ratio {sum(metered_s) / sum(plain_s):.3f})")


if __name__ == "__main__":
    main()
