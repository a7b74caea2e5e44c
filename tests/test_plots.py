"""Charts render: real PNGs of the expected size with something drawn on them."""

import pytest

from pytest_llm_energy.results import CaseResult, PhaseEnergy

matplotlib = pytest.importorskip("matplotlib")


def non_blank_png(path):
    import matplotlib.image as mpimg

    pixels = mpimg.imread(str(path))
    height, width = pixels.shape[:2]
    rgb = pixels[..., :3]
    # Not a blank canvas: plenty of pixels differ from white, in several colours.
    not_white = (rgb < 0.95).any(axis=-1).mean()
    colours = len({tuple(p) for p in (rgb[::7, ::7].reshape(-1, 3) * 255).astype(int).tolist()})
    return width, height, not_white, colours


def case(task, mode, decode, passed):
    return CaseResult(task, "humaneval", PhaseEnergy(1.0, 0.1, 50), PhaseEnergy(decode, 1.0, 100), "nvml",
                      "measured", babbling=mode, passed=passed, test_id=f"t.py::test[{task}-bs_{mode}]")


def test_phase_and_babbling_charts(tmp_path):
    from pytest_llm_energy.plots import write_plots

    results = [case(f"HumanEval/{i}", mode, decode, True)
               for i in range(4) for mode, decode in (("off", 10.0 + i), ("tests", 3.0))]
    written = write_plots(results, str(tmp_path / "plots"))
    assert [p.rsplit("/", 1)[1] for p in written] == ["energy_by_test.png", "babbling.png"]
    for path in written:
        width, height, not_white, colours = non_blank_png(path)
        assert width >= 600 and height >= 250
        assert not_white > 0.03 and colours >= 4


def test_plot_option_writes_charts(pytester):
    pytester.makepyfile("def test_a(energy):\n    energy.generate('def f():\\n', max_new_tokens=4)\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", "--energy-plot=charts")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plot: */charts/energy_by_test.png"])
    width, height, not_white, _ = non_blank_png(pytester.path / "charts" / "energy_by_test.png")
    assert width == 900 and not_white > 0.02


def test_plot_option_pointing_at_a_file_is_a_usage_error(pytester):
    pytester.makefile(".txt", charts="x")
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-plot=charts.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --energy-plot=*charts.txt: is a file, give a directory"])
