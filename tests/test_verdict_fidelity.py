"""The sandbox's verdicts against HumanEval's reference harness, on the fidelity corpus."""

import collections

import pytest

from sandbox_support import box  # noqa: F401  (the fixture, in each isolation mode)
from verdict_corpus import ISOLATION, build, disagreements, reference_verdicts


@pytest.fixture(scope="module")
def corpus():
    items = build()
    return items, reference_verdicts(items)


def test_the_corpus_covers_every_kind_of_difference(corpus):
    items, reference = corpus
    kinds = collections.Counter(item["kind"] for item in items)
    assert len(items) >= 800
    for kind in ("canonical", "mutant", "subclass", "collections", "typed", "main guard", "big int",
                 "exception", "mutated argument", "iterable argument", ISOLATION):
        assert kinds[kind] >= 2, kind
    # Both verdicts occur, or agreement would say little.
    passed = sum(v["passed"] for v in reference)
    assert 0.2 * len(items) < passed < 0.95 * len(items)


def test_verdicts_are_the_reference_harness_s(box, corpus):  # noqa: F811
    items, reference = corpus
    ours = box.check_many([(item["problem"], item["completion"]) for item in items])
    differ = disagreements(items, reference, ours)
    unexpected = [(item["id"], ref["result"], result.detail[:200]) for item, ref, result in differ
                  if item["kind"] != ISOLATION]
    assert unexpected == []
    # Where the isolation is the point, the reference is fooled and the sandbox is not.
    isolation = [(item, ref, result) for item, ref, result in zip(items, reference, ours) if item["kind"] == ISOLATION]
    assert isolation and all(ref["passed"] and not result.passed for _, ref, result in isolation)
