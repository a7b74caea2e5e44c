"""A model spread over several devices: --energy-device-map, the GPUs it spans, their share of the energy."""

import sys

import pytest

from pytest_llm_energy.backends.base import BackendLoadError
from pytest_llm_energy.backends.hf import HFBackend, spanned_devices
from pytest_llm_energy.report import summary_lines
from pytest_llm_energy.results import CaseResult, PhaseEnergy


def test_the_devices_a_device_map_spans_in_cuda_order():
    placed = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "model.layers.2": "10",
              "model.norm": 1, "lm_head": "cpu"}
    assert spanned_devices(placed) == ["cuda:0", "cuda:1", "cuda:10", "cpu"]
    assert spanned_devices(None) == []


def test_builtin_model_loads_through_accelerate_and_generates():
    backend = HFBackend.load("builtin:tiny", device="auto", dtype="float32", device_map="auto")
    assert backend.spans == ["cpu"] and backend.describe()["spans"] == ["cpu"]
    decoding = backend.start()
    logits = decoding.prefill(backend.encode("def f():"))
    decoding.step(int(logits.argmax()))


def test_without_accelerate_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)  # import fails
    with pytest.raises(BackendLoadError, match=r"needs accelerate: pip install 'pytest-llm-energy\[multi-gpu\]'"):
        HFBackend.load("builtin:tiny", device_map="auto")


def test_the_report_header_lists_the_gpus_and_the_json_each_one_s_joules():
    phase = PhaseEnergy(3.0, 0.1, 4, devices={"cuda:0 GPU-a": 2.0, "cuda:1 GPU-b": 1.0})
    result = CaseResult("c", "s", phase, phase, "nvml", "measured", test_id="t")
    meta = {"model": {"id": "big", "device": "cuda:0", "spans": ["cuda:0", "cuda:1"]},
            "meter": {"name": "nvml", "kind": "measured"}}
    assert summary_lines([result], meta)[0].startswith("model big spread over cuda:0, cuda:1, meter nvml")
    assert result.to_dict()["prefill"]["devices"] == {"cuda:0 GPU-a": 2.0, "cuda:1 GPU-b": 1.0}
    assert CaseResult.from_dict(result.to_dict()).prefill.devices == phase.devices


@pytest.mark.parametrize("args, message", [
    (["--energy-device-map=everywhere"], "ERROR: --energy-device-map='everywhere': expected one of auto, *"),
    (["--energy-device-map=auto", "--energy-device=cpu"],
     "ERROR: --energy-device-map=auto spreads the model over the visible GPUs; it does not combine with *"),
])
def test_bad_device_maps_are_usage_errors(pytester, args, message):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*args)
    result.stderr.fnmatch_lines([message])
