"""The terminal table and JSON document, from hand-made results."""

import json

from pytest_llm_energy.report import json_document, short_test_names, summary_lines, table_rows, write_json
from pytest_llm_energy.results import BlockResult, CaseResult, PhaseEnergy, result_from_dict

META = {"model": {"id": "m", "device": "cuda"}, "meter": {"name": "nvml", "kind": "measured"}, "notices": []}


def case(test_id, prefill_j=1.0, decode_j=4.0, decode_tokens=8, short=False):
    # A short prefill read from its own edges: its bound is half the figure.
    return CaseResult(
        case_id=test_id, suite="prompt",
        prefill=PhaseEnergy(prefill_j, 0.02, 10, below_resolution=short, method="counter",
                            bound_j=0.5 * prefill_j if short else 0.01 * prefill_j),
        decode=PhaseEnergy(decode_j, 0.5, decode_tokens, bound_j=0.01 * decode_j),
        meter="nvml", meter_kind="measured", prompt_tokens=10, new_tokens=decode_tokens + 1, test_id=test_id,
    )


def test_rows_sum_generations_per_test_and_follow_with_blocks():
    results = [
        case("t.py::a"),
        case("t.py::a", prefill_j=2.0, decode_j=6.0, decode_tokens=12),
        BlockResult("post", PhaseEnergy(0.5, 0.1), "nvml", "measured", test_id="t.py::a"),
        case("t.py::b"),
    ]
    file, names = short_test_names(r.test_id for r in results)
    rows = table_rows(results, names)
    assert file == "t.py"
    assert rows[0][:8] == ["a (2 generations)", "3", "10", "13", "500", 20, 22, "1.040"]
    assert rows[1][0] == "a [post]" and rows[1][3] == "0.5"
    assert rows[2][0] == "b"


def test_ids_from_several_files_stay_whole():
    file, names = short_test_names(["x.py::a", "y.py::a"])
    assert file == "" and names == {"x.py::a": "x.py::a", "y.py::a": "y.py::a"}


def test_figures_with_wide_bounds_are_marked_with_a_footnote():
    lines = summary_lines([case("t.py::a", short=True)], {**META, "meter": {**META["meter"], "update_period_s": 0.1}},
                          mark_bound=0.05)
    text = "\n".join(lines)
    assert " 1† " in text and " 4 " in text  # the prefill's bound is 50%, the decode's 1%
    assert " 5† " in text  # the total's bound, (0.5 + 0.04) J, is 10.8% of it
    assert "† figure whose error bound exceeds 5% of it" in text
    assert "energy counter updates every 100.0 ms (fitted)" in text
    assert "method: counter = energy counter" in text
    assert "estimated" not in text


def test_mark_threshold_is_the_users():
    text = "\n".join(summary_lines([case("t.py::a", short=True)], META, mark_bound=0.6))
    assert "†" not in text


def test_nothing_measured_says_so():
    assert summary_lines([], META) == ["no energy was measured (no test used the energy fixture)"]


def test_json_round_trips_results(tmp_path):
    results = [case("t.py::a", short=True), BlockResult("b", PhaseEnergy(0.5, 0.1), "nvml", "measured", "t.py::a")]
    document = json_document(results, META, {"t.py::a": "passed"}, 0)
    path = tmp_path / "deep" / "out.json"
    write_json(str(path), document)
    loaded = json.loads(path.read_text())
    assert [result_from_dict(r) for r in loaded["results"]] == results
    assert loaded["totals"]["total_joules"] == 5.5 and loaded["totals"]["block_joules"] == 0.5
    assert loaded["results"][0]["decode"]["joules_per_token"] == 0.5
    assert list(tmp_path.joinpath("deep").iterdir()) == [path]  # no staging file left behind


def test_markdown_has_gates_tables_and_escaped_cells():
    from pytest_llm_energy.report import markdown_document

    results = [case("t.py::a|b", short=True)]
    text = markdown_document(results, META, 0.05, ["run: gross energy 5 J exceeds budget 1J by 4 J (+400%)"])
    lines = text.splitlines()
    assert lines[0] == "## LLM energy"
    assert "- run: gross energy 5 J exceeds budget 1J by 4 J (+400%)" in lines
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| test") and "a\\|b" in table[2]
    after = lines[lines.index(table[-1]) + 1]
    assert after == ""  # a blank line ends the table
    # The marks are explained under the table.
    assert any(line.startswith("† figure whose error bound exceeds 5% of it") for line in lines)


def test_junit_properties_of_a_test():
    from pytest_llm_energy.report import junit_properties

    props = dict(junit_properties([case("t.py::a"), BlockResult("b", PhaseEnergy(0.5, 0.1), "nvml", "measured",
                                                                "t.py::a")]))
    assert props["energy_prefill_j"] == 1.0 and props["energy_decode_j"] == 4.0
    assert props["energy_total_j"] == 5.5 and props["energy_blocks_j"] == 0.5
    assert props["energy_decode_j_per_token"] == 0.5 and props["energy_meter"] == "nvml"


def test_collapse_repeats_takes_medians_and_keeps_first_verdict():
    from dataclasses import replace

    from pytest_llm_energy.results import collapse_repeats

    base = case("t.py::a")
    runs = [replace(base, repeat=i, prefill=PhaseEnergy(j, 0.02, 10), decode=PhaseEnergy(4 * j, 0.5, 8))
            for i, j in enumerate([3.0, 1.0, 2.0])]
    block = BlockResult("b", PhaseEnergy(0.5, 0.1), "nvml", "measured", "t.py::a")
    collapsed = collapse_repeats(runs + [block])
    assert len(collapsed) == 2 and collapsed[1] is block
    assert collapsed[0].prefill.joules == 2.0 and collapsed[0].decode.joules == 8.0
    assert collapsed[0].repeat == 0 and collapsed[0].extra["repeats"] == 3
