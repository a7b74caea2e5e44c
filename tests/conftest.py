import logging
import os
import sys
from pathlib import Path

import pytest
# pytester's in-process runs restore sys.modules afterwards, and a C extension
# such as torch cannot be imported a second time: import the model stack here,
# outside every inner run, so inner runs reuse it.
import safetensors  # noqa: F401
import tokenizers  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: F401

pytest_plugins = ["pytester"]

sys.path.insert(0, os.path.dirname(__file__))

from fake_nvml import FakeClock, FakeGpu, make_fake_pynvml  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


class _DeprecationLog(logging.Handler):
    """Collects transformers' deprecations that arrive as log records, not warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "deprecat" in message.lower() or "will be removed" in message.lower():
            self.messages.append(message)


@pytest.fixture(autouse=True)
def no_transformers_deprecations():
    """Fail a test in which transformers logged a deprecation (``logger.warning_once`` and kin)."""
    handler = _DeprecationLog()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.messages:
        pytest.fail("transformers logged a deprecation: " + handler.messages[0], pytrace=False)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake_nvml_module():
    """Build a fake pynvml over the given GPUs and a clock."""
    return make_fake_pynvml


@pytest.fixture(scope="session")
def tiny_backend():
    from pytest_llm_energy.backends.hf import HFBackend

    return HFBackend.load("builtin:tiny", device="cpu")


def write_powercap(root: Path, zones: dict[str, dict[str, object]]) -> Path:
    """A fake powercap tree: zone path -> {"name", "energy_uj", "max_energy_range_uj"}."""
    for rel, files in zones.items():
        zone = root / rel
        zone.mkdir(parents=True, exist_ok=True)
        for name, value in files.items():
            (zone / name).write_text(f"{value}\n")
    return root


@pytest.fixture
def powercap(tmp_path):
    def build(zones):
        return write_powercap(tmp_path / "powercap", zones)

    return build


__all__ = ["FakeGpu"]
