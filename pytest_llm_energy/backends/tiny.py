"""``builtin:tiny``: a small causal LM built offline, deterministically.

It needs no download: a character-level tokenizer over printable ASCII and
whitespace (other characters become ``<unk>``), so every generated token
decodes to valid text, and a Llama-architecture model initialised from a fixed
seed.
Its output is not meaningful code; it exists so the real generation path, the
meters and the reports run anywhere. It is built once and cached on disk, then
loaded with ``from_pretrained`` like any checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

BUILTIN_PREFIX = "builtin:"
TINY_NAME = "tiny"
# Bump when the recipe below changes, so stale caches are not reused.
TINY_REVISION = "3"
TINY_SEED = 1234
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
# Tab, newline, carriage return and printable ASCII.
TINY_BYTES = (9, 10, 13, *range(32, 127))


def cache_root() -> Path:
    base = os.environ.get("LLM_ENERGY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "pytest-llm-energy",
    )
    return Path(base)


def _byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-character table, in byte order (what ByteLevel uses)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(
        range(ord("\xae"), ord("\xff") + 1)
    )
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def build_tokenizer():  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    # The byte-level pre-tokenizer maps each byte to a printable stand-in
    # character; keep the stand-ins of the bytes in TINY_BYTES.
    stand_in = {b: ch for b, ch in zip(range(256), _byte_level_alphabet())}
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for byte in TINY_BYTES:
        vocab[stand_in[byte]] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    # Prompts start with <s>, as Llama-family tokenizers do.
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=4096,
    )


def build_model(vocab_size: int):  # -> LlamaForCausalLM
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    # Seed a private generator state so building never disturbs the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    model.eval()
    return model


def tiny_model_dir() -> Path:
    """Directory holding the built model, building it on first use.

    Built in a temporary directory and renamed into place, so parallel workers
    racing to build it never see half a checkpoint.
    """
    import transformers

    # A checkpoint saved by one major release of transformers names classes
    # the other does not have (5.x saves its tokenizer as "TokenizersBackend"):
    # each major release builds its own.
    major = transformers.__version__.split(".")[0]
    target = cache_root() / f"builtin-{TINY_NAME}-r{TINY_REVISION}-transformers{major}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        tokenizer = build_tokenizer()
        model = build_model(len(tokenizer))
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
