"""LongBench code tasks: metric, prompts, truncation, data loading, runs, builder, amplification."""

import json
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from pytest_llm_energy.amplification import summarize, usable_bins
from pytest_llm_energy.meters import Meter, Reading
from pytest_llm_energy.tasks.longbench import (
    DataError,
    build_prompt,
    code_sim_score,
    fuzz_ratio,
    length_bucket,
    load_records,
    truncate_middle,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "longbench"
needs_shared = pytest.mark.skipif(not (SHARED / "lcc.jsonl").is_file(), reason="../shared/longbench is not here")


@pytest.mark.parametrize("prediction, answer, expected", [
    ("    x = 1\n", "    x = 1", 1.0),
    ("\n\n# a comment first\n    x = 1\n", "    x = 1", 1.0),           # comment lines are skipped
    ("```python\n    x = 1\n```", "    x = 1", 1.0),                    # so are fence lines
    ("// java comment\nint y = 2;", "int y = 2;", 1.0),
    ("abcd", "abce", 0.75),                                             # 2*3/8 = 0.75
    ("", "", 1.0),                                                      # fuzz.ratio("", "") is 100
    ("", "x = 1", 0.0),
    ("# only comments", "x = 1", 0.0),                                  # nothing left to compare
    ("x = 12345", "x = 1", round(2 * 5 / 14 * 100) / 100),              # 0.71
])
def test_code_sim_score_hand_worked(prediction, answer, expected):
    assert code_sim_score(prediction, answer) == pytest.approx(expected)


def reference_code_sim(prediction, ground_truth):
    """LongBench v1 metrics.code_sim_score, verbatim, on fuzzywuzzy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fuzzywuzzy import fuzz
    all_lines = prediction.lstrip('\n').split('\n')
    prediction = ""
    for line in all_lines:
        if ('`' not in line) and ('#' not in line) and ('//' not in line):
            prediction = line
            break
    return (fuzz.ratio(prediction, ground_truth) / 100)


def test_code_sim_score_agrees_with_the_reference_on_random_inputs():
    pytest.importorskip("fuzzywuzzy")
    rng = random.Random(5)
    alphabet = "ab \n#`/(){}x=1;"
    for _ in range(3000):
        prediction = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        answer = "".join(rng.choice(alphabet.replace("\n", "")) for _ in range(rng.randint(0, 20)))
        assert code_sim_score(prediction, answer) == reference_code_sim(prediction, answer), (prediction, answer)


def test_fuzz_ratio_rounds_halves_to_even_like_python_round():
    # SequenceMatcher ratio 0.125 -> 12.5 -> 12 (banker's rounding, as fuzzywuzzy's intr).
    assert fuzz_ratio("abcdefgh", "a1234567") == 12


def test_prompts_are_longbench_templates_and_keep_braces():
    record = {"context": "def f():\n    return {'a': 1}\n", "input": "x = f()\n"}
    assert build_prompt(record, "lcc") == (
        "Please complete the code given below. \ndef f():\n    return {'a': 1}\nNext line of code:\n")
    assert build_prompt(record, "repobench-p").endswith("return {'a': 1}\nx = f()\nNext line of code:\n")


def test_truncation_keeps_the_first_and_last_halves(tiny_backend):
    prompt = "".join(chr(ord("a") + i % 26) for i in range(100))
    cut, truncated = truncate_middle(prompt, tiny_backend, max_length=20)
    ids = tiny_backend.encode(prompt)  # <s> + 100 characters
    assert truncated
    assert cut == tiny_backend.decode(ids[:10]) + tiny_backend.decode(ids[-10:])
    assert cut == prompt[:9] + prompt[-10:]  # the first half held <s>, which decoding drops
    same, truncated = truncate_middle("short", tiny_backend, max_length=20)
    assert same == "short" and not truncated


def test_length_buckets():
    assert [length_bucket(n) for n in (100, 3999, 4000, 7999, 8000, 20000)] == \
        ["<4k", "<4k", "4k-8k", "4k-8k", "8k+", "8k+"]


def test_malformed_lines_are_reported_with_file_and_line(tmp_path):
    good = {"input": "", "context": "x = 1\n", "answers": ["y = 2"], "length": 2, "dataset": "lcc",
            "language": "python", "all_classes": None, "_id": "abc"}
    lines = [json.dumps(good), "{not json", json.dumps({"context": "x"}), "", json.dumps(dict(good, answers="y"))]
    (tmp_path / "lcc.jsonl").write_text("\n".join(lines) + "\n")
    loaded = load_records(str(tmp_path), "lcc")
    assert len(loaded.records) == 1
    assert [s.split(": ", 1)[0].rsplit(":", 1)[1] for s in loaded.skipped] == ["2", "3", "5"]
    assert "not JSON" in loaded.skipped[0] and "missing input" in loaded.skipped[1]


def test_missing_data_names_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_records(str(tmp_path / "nowhere"), "lcc")
    with pytest.raises(DataError, match=r"no lcc.jsonl in .* \(looked for .*lcc.jsonl\)"):
        load_records(str(tmp_path), "lcc")
    with pytest.raises(DataError, match="set --longbench-dir, ini longbench_dir or \\$LONGBENCH_DIR"):
        load_records("", "lcc")


@needs_shared
def test_the_shared_sample_loads_cleanly():
    lcc, repobench = load_records(str(SHARED), "lcc"), load_records(str(SHARED), "repobench-p")
    assert (len(lcc.records), len(repobench.records)) == (100, 17)
    assert not lcc.skipped and not repobench.skipped
    assert {r["language"] for r in lcc.records} == {"python", "java", "csharp"}


TESTS = """
import pytest

@pytest.mark.longbench(subset="lcc", limit=2, languages=["python"])
def test_lcc(longbench_case):
    result = longbench_case.run()
    assert 0 <= result.score <= 1

@pytest.mark.longbench(subset="repobench-p", limit=1)
def test_repobench(longbench_case):
    longbench_case.run()
"""


@needs_shared
def test_longbench_run_scores_and_reports(pytester):
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", f"--longbench-dir={SHARED}",
                                "--longbench-max-length=512", "--energy-json=lb.json")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*test_lcc[[]lcc/*[]]*", "LongBench code tasks", "lcc *2 *", "repobench-p *1 *",
        "decode energy per token by prompt length: <4k: *",
    ])
    results = json.loads((pytester.path / "lb.json").read_text())["results"]
    assert [r["extra"]["subset"] for r in results] == ["lcc", "lcc", "repobench-p"]
    assert all(r["suite"] == "longbench" and 0 <= r["score"] <= 1 for r in results)
    assert all(r["prompt_tokens"] <= 512 and r["extra"]["truncated"] for r in results)
    assert all(r["new_tokens"] <= 64 for r in results)
    assert {r["extra"]["language"] for r in results[:2]} == {"python"}


@needs_shared
def test_min_code_sim_gate(pytester):
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", f"--longbench-dir={SHARED}",
                                "--longbench-max-length=256", "--min-code-sim=0.99")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["FAILED LongBench mean code similarity is * over 3 cases, below --min-code-sim=0.99"])


def test_missing_longbench_data_is_a_usage_error(pytester, monkeypatch):
    monkeypatch.delenv("LONGBENCH_DIR", raising=False)
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *test_lcc: no LongBench directory: set --longbench-dir, *"])
    result = pytester.runpytest("-p", "no:cacheprovider", "--longbench-dir=/no/such/dir")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --longbench-dir=/no/such/dir: no such directory*"])
    empty = pytester.mkdir("empty")
    result = pytester.runpytest("-p", "no:cacheprovider", f"--longbench-dir={empty}")
    result.stderr.fnmatch_lines([f"ERROR: *: no lcc.jsonl in {empty} (looked for {empty}/lcc.jsonl)"])


# -- the builder -----------------------------------------------------------------

def make_repo(root):
    package = root / "pkg"
    package.mkdir(parents=True)
    for n in range(4):
        body = "".join(f"def function_{n}_{i}(value):\n    result = value * {i} + {n}\n    return result\n\n"
                       for i in range(40))
        (package / f"module_{n}.py").write_text(f'"""Module {n}."""\n\n' + body)
    (package / "notes.txt").write_text("not code\n")
    return root


def build(repo, out, *extra):
    return subprocess.run([sys.executable, "-m", "pytest_llm_energy.longbench", "build", "--repo", str(repo),
                           "--out", str(out), *extra], capture_output=True, text=True)


def test_builder_is_deterministic_and_writes_valid_records(tmp_path):
    repo = make_repo(tmp_path / "repo")
    first = build(repo, tmp_path / "a" / "lcc.jsonl", "--count", "6", "--min-context-tokens", "50", "--seed", "3")
    assert first.returncode == 0, first.stderr
    assert "wrote 6 records" in first.stdout
    second = build(repo, tmp_path / "b" / "lcc.jsonl", "--count", "6", "--min-context-tokens", "50", "--seed", "3")
    assert second.returncode == 0
    a = (tmp_path / "a" / "lcc.jsonl").read_text()
    assert a == (tmp_path / "b" / "lcc.jsonl").read_text()
    other = build(repo, tmp_path / "c" / "lcc.jsonl", "--count", "6", "--min-context-tokens", "50", "--seed", "4")
    assert other.returncode == 0 and (tmp_path / "c" / "lcc.jsonl").read_text() != a
    loaded = load_records(str(tmp_path / "a"), "lcc")
    assert len(loaded.records) == 6 and not loaded.skipped
    for record in loaded.records:
        assert record["length"] >= 50 and record["dataset"] == "lcc" and record["language"] == "python"
        answer = record["answers"][0]
        assert len(answer.strip()) >= 4 and not answer.strip().startswith("#")
        source = (repo / "pkg").glob("*.py")
        assert any((record["context"] + answer) in p.read_text() for p in source)
    assert len({r["_id"] for r in loaded.records}) == 6


def test_builder_errors(tmp_path):
    missing = build(tmp_path / "none", tmp_path / "x.jsonl")
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    repo = make_repo(tmp_path / "repo")
    too_strict = build(repo, tmp_path / "x.jsonl", "--min-context-tokens", "100000")
    assert too_strict.returncode == 1 and "lower --min-context-tokens" in too_strict.stderr


# -- amplification -----------------------------------------------------------------

class ContextCost:
    """A fake backend whose every forward pass costs a + b x (tokens in the KV cache) joules."""

    def __init__(self, fixed=1.0, per_context_token=0.001):
        self.fixed, self.per_token = fixed, per_context_token
        self.energy = 0.0
        self.clock = 0.0


def test_amplification_arithmetic_against_a_known_cost(tiny_backend):
    import torch

    from pytest_llm_energy.backends.base import Backend, Decoding
    from pytest_llm_energy.runner import GenerationConfig, generate
    from pytest_llm_energy.results import CaseResult

    cost = ContextCost(fixed=1.0, per_context_token=0.001)

    class Step(Decoding):
        def __init__(self):
            self.context = 0

        def _forward(self, tokens):
            self.context += tokens
            cost.energy += cost.fixed * tokens + cost.per_token * self.context
            cost.clock += 1.0
            return torch.zeros(10)

        def prefill(self, ids):
            return self._forward(len(ids))

        def step(self, token):
            return self._forward(1)

    class Fake(Backend):
        def encode(self, text):
            return list(range(len(text)))

        def decode(self, ids):
            return ""

        def start(self):
            return Step()

        @property
        def eos_token_ids(self):
            return frozenset()

    class CostMeter(Meter):
        name = "cost"

        def read(self):
            return Reading(t=cost.clock, joules=cost.energy)

    results = []
    for length in (100, 1000, 4000):
        generation = generate(Fake(), CostMeter(), "", GenerationConfig(max_new_tokens=11, ignore_eos=True),
                              prompt_ids=list(range(length)))
        results.append(CaseResult(f"amplification/{length}", "amplification", generation.prefill, generation.decode,
                                  "cost", "measured", prompt_tokens=length, new_tokens=11, extra={"bin": length}))
    bins = summarize(results)
    # Decode step i (1..10) sees a cache of L + i tokens: mean cost 1 + 0.001 (L + 5.5).
    expected = {length: 1 + 0.001 * (length + 5.5) for length in (100, 1000, 4000)}
    for b in bins:
        assert b.decode_j_per_token == pytest.approx(expected[b.prompt_tokens])
        assert b.amplification == pytest.approx(expected[b.prompt_tokens] / expected[100] - 1)
        assert b.prefill_j == pytest.approx(1.0 * b.prompt_tokens + 0.001 * b.prompt_tokens)
    assert bins[-1].amplification == pytest.approx((1 + 4.0055) / 1.1055 - 1)


def test_bins_beyond_the_context_are_dropped():
    assert usable_bins([256, 8192, 1024], context=4096, new_tokens=32) == ([256, 1024], [8192])
    assert usable_bins([512, 256], context=None, new_tokens=32) == ([256, 512], [])


def test_amplification_fixture_method_and_report(pytester):
    pytester.makepyfile("""
def test_sweep(energy):
    bins = energy.amplification(bins=(32, 128, 9000), new_tokens=8, repeats=2)
    assert [b.prompt_tokens for b in bins] == [32, 128]
    assert bins[0].amplification == 0
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", "--energy-json=a.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["Amplification: decode energy per token against prompt length",
                                 "32 * +0.0% *2", "128 *2"])
    document = json.loads((pytester.path / "a.json").read_text())
    assert [b["prompt_tokens"] for b in document["amplification"]] == [32, 128]
    assert {r["prompt_tokens"] for r in document["results"]} == {32, 128}


def test_amplification_in_rounds_sweeps_once(pytester):
    pytester.makepyfile("""
def test_sweep(energy):
    bins = energy.amplification(bins=(32, 64), new_tokens=4, repeats=2)
    assert [b.prompt_tokens for b in bins] == [32, 64]
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", "--energy-repeat=3",
                                "--energy-json=a.json")
    result.assert_outcomes(passed=3)  # three rounds
    document = json.loads((pytester.path / "a.json").read_text())
    # The sweep's own 2 repetitions per bin, measured in the first round only.
    assert len(document["results"]) == 4
