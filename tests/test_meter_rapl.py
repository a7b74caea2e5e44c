"""The RAPL meter against a fake powercap tree."""

import time

import pytest

from pytest_llm_energy.meters import MeterError, MeterUnavailable, RaplMeter
from pytest_llm_energy.meters import rapl as rapl_module

MAX = 262143328850


def tree(package0=1_000_000, dram0=500_000, package1=2_000_000):
    return {
        "intel-rapl:0": {"name": "package-0", "energy_uj": package0, "max_energy_range_uj": MAX},
        "intel-rapl:0/intel-rapl:0:0": {"name": "core", "energy_uj": 7, "max_energy_range_uj": MAX},
        "intel-rapl:0/intel-rapl:0:1": {"name": "dram", "energy_uj": dram0, "max_energy_range_uj": MAX},
        "intel-rapl:1": {"name": "package-1", "energy_uj": package1, "max_energy_range_uj": MAX},
        "intel-rapl:2": {"name": "psys", "energy_uj": 99, "max_energy_range_uj": MAX},
    }


def set_energy(root, rel, value):
    (root / rel / "energy_uj").write_text(f"{value}\n")


def test_sums_packages_and_dram_only(powercap, clock):
    root = powercap(tree())
    meter = RaplMeter(root=root, clock=clock, wrap_guard_s=0)
    assert sorted(meter.devices()) == ["intel-rapl:0:1:dram", "intel-rapl:0:package-0", "intel-rapl:1:package-1"]
    r0 = meter.read()
    set_energy(root, "intel-rapl:0", 4_000_000)  # +3 J
    set_energy(root, "intel-rapl:0/intel-rapl:0:1", 1_500_000)  # +1 J
    set_energy(root, "intel-rapl:0/intel-rapl:0:0", 9_000_000)  # core: inside package, ignored
    set_energy(root, "intel-rapl:2", 50_000_000)  # psys: overlaps all, ignored
    clock.advance(1.0)
    r1 = meter.read()
    window = meter.window(r0, r1)
    assert window.joules == pytest.approx(4.0)
    assert window.watts == pytest.approx(4.0)


def test_counter_wraparound_uses_max_energy_range(powercap, clock):
    root = powercap(tree(package0=MAX - 2_000_000))
    meter = RaplMeter(root=root, clock=clock, wrap_guard_s=0)
    r0 = meter.read()
    set_energy(root, "intel-rapl:0", 3_000_000)  # wrapped: 2 J to the top, 3 J after
    clock.advance(0.5)
    r1 = meter.read()
    assert meter.window(r0, r1).joules == pytest.approx(5.0)


def test_symlinked_subzones_are_counted_once(powercap, clock):
    root = powercap(tree())
    (root / "intel-rapl:0:1").symlink_to(root / "intel-rapl:0" / "intel-rapl:0:1")
    meter = RaplMeter(root=root, clock=clock, wrap_guard_s=0)
    assert len(meter.devices()) == 3


def test_missing_tree_is_unavailable(tmp_path):
    with pytest.raises(MeterUnavailable, match="no powercap directory"):
        RaplMeter(root=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MeterUnavailable, match="no RAPL package or dram domain"):
        RaplMeter(root=tmp_path / "empty")


def test_unreadable_counters_fail_with_one_line_telling_what_to_do(powercap, monkeypatch):
    root = powercap(tree())
    real_read = rapl_module._read_int

    def deny(path):
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    # Tests run as root, who may read anything: deny at the file-read seam.
    monkeypatch.setattr(rapl_module, "_read_int", deny)
    with pytest.raises(MeterUnavailable) as info:
        RaplMeter(root=root)
    message = str(info.value)
    assert "\n" not in message and "permission denied" in message and "chmod" in message


def test_counter_that_becomes_unreadable_raises_meter_error(powercap, clock):
    root = powercap(tree())
    meter = RaplMeter(root=root, clock=clock, wrap_guard_s=0)
    meter.read()
    (root / "intel-rapl:1" / "energy_uj").unlink()
    with pytest.raises(MeterError, match="intel-rapl:1"):
        meter.read()


def test_wrap_guard_thread_keeps_counting_across_more_than_one_range(powercap):
    small = 10_000_000  # a 10 J counter range
    root = powercap({"intel-rapl:0": {"name": "package-0", "energy_uj": 1_000_000, "max_energy_range_uj": small}})
    meter = RaplMeter(root=root, wrap_guard_s=0.005)
    r0 = meter.read()
    meter.start()
    try:
        set_energy(root, "intel-rapl:0", 7_000_000)  # +6 J, seen by the guard thread
        deadline = time.monotonic() + 2
        while meter.domains[0].last_uj != 7_000_000 and time.monotonic() < deadline:
            time.sleep(0.002)
        set_energy(root, "intel-rapl:0", 3_000_000)  # wrapped: +6 J more
        r1 = meter.read()
    finally:
        meter.close()
    # 12 J in all: more than one counter range, which edge reads alone would miss.
    assert meter.window(r0, r1).joules == pytest.approx(12.0)
