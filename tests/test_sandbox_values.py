"""The sandbox's value codec on its own: what crosses, what is rebuilt, what is refused."""

import collections
import enum
import json
import marshal
import typing

import pytest

from pytest_llm_energy._sandbox_values import (
    CandidateRaised,
    NotPlain,
    call_arguments,
    call_payload,
    changed,
    copy_back,
    decode,
    encode,
    exception_reply,
    parse,
    rebuild_exception,
    snapshots,
)


def across(value):
    """Encode as the candidate does, parse and decode as the server does."""
    return decode(parse(json.dumps(encode(value))))


class Point(typing.NamedTuple):
    x: int
    y: int


def test_subclasses_cross_as_what_they_equal():
    counter = collections.Counter("abca")
    assert across(counter) == counter and type(across(counter)) is collections.Counter
    ordered = collections.OrderedDict([("b", 1), ("a", 2)])
    assert list(across(ordered)) == ["b", "a"] and type(across(ordered)) is collections.OrderedDict
    assert across(Point(1, 2)) == (1, 2) and across(Point(1, 2)).y == 2
    colour = enum.IntEnum("Colour", {"RED": 3}).RED
    assert across(colour) == 3 and type(across(colour)) is int
    assert type(across(type("S", (str,), {})("x"))) is str
    assert across(collections.deque([1, 2])) == collections.deque([1, 2])


def test_a_cheating_subclass_is_read_through_its_base_type():
    class Liar(list):
        def __eq__(self, other):
            return True

        def __iter__(self):
            return iter([42])

    assert across(Liar([1, 2])) == [1, 2]
    with pytest.raises(NotPlain):
        encode(object())


def test_ints_of_any_size_cross():
    big = 7 ** 20000
    assert across(big) == big and across(-big) == -big


@pytest.mark.parametrize("data", [
    {"n": ["import os", ["a"], [1]]},         # not an identifier
    {"n": ["P", ["_a"], [1]]},                # a private field
    {"n": ["P", ["a", "a"], [1, 2]]},         # duplicate fields
    {"n": ["P", ["a"], [1, 2]]},              # wrong length
    {"i": 12},                                # hex that is not a string
    {"r": [1, "x"]},                          # a range of non-ints
    {"zz": 1},
])
def test_malformed_replies_are_refused(data):
    with pytest.raises((ValueError, TypeError)):
        decode(parse(json.dumps(data)))


def test_a_hash_flood_in_a_counter_is_refused():
    flood = [[(2 ** 61 - 1) * i, 1] for i in range(100)]
    with pytest.raises(ValueError, match="hash flood"):
        decode(parse(json.dumps({"C": flood})))


def test_arguments_marshal_does_not_carry_go_as_tagged_json():
    exact = call_payload(([1, 2],), {"k": "v"}, marshal)
    assert call_arguments(marshal.loads(exact)) == (([1, 2],), {"k": "v"})
    args, kwargs = call_arguments(marshal.loads(call_payload((range(3), (x for x in [1, 2])), {}, marshal)))
    assert args[0] == range(3) and list(args[1]) == [1, 2]


def test_arguments_changed_in_place_are_copied_back():
    args, kwargs = ([3, 1], {"a": 1}), {"s": {1}}
    taken = snapshots(args, kwargs)
    args[0].sort()
    kwargs["s"].add(2)
    entries = changed(args, kwargs, taken)
    assert [key for key, _ in entries] == [0, "s"]  # the dict was not touched
    test_side = ([3, 1], {"a": 1}), {"s": {1}}
    copy_back(*test_side, [[key, parse(json.dumps(value))] for key, value in entries])
    assert test_side == (([1, 3], {"a": 1}), {"s": {1, 2}})
    with pytest.raises(ValueError):
        copy_back((5,), {}, [[0, [1]]])  # an int cannot have changed in place
    with pytest.raises(ValueError):
        copy_back(([1],), {}, [[3, [1]]])  # nor an argument that was not passed


def _raised(exc, namespace=None):
    reply = json.loads(json.dumps(exception_reply(exc, lambda e: type(e).__name__ + ": " + str(e))))
    reply["args"] = parse(json.dumps(reply["args"]))
    return rebuild_exception(reply, namespace or {}, RuntimeError)


def test_exceptions_are_raised_again_as_builtins_or_the_prompt_s_classes():
    class Mine(ValueError):
        pass

    again = _raised(Mine("negative"))
    assert type(again) is ValueError and str(again) == "negative"
    assert type(_raised(KeyError("b"))) is KeyError and _raised(KeyError("b")).args == ("b",)
    assert type(_raised(OSError(2, "gone"))) is FileNotFoundError

    class InvalidInput(Exception):
        pass

    assert type(_raised(InvalidInput("x"), {"InvalidInput": InvalidInput})) is InvalidInput
    assert isinstance(_raised(SystemExit(3)), CandidateRaised)  # no `except Exception` catches it
    forged = rebuild_exception({"error": "x", "raised": ["check", 5], "args": None}, {"check": print}, RuntimeError)
    assert type(forged) is RuntimeError  # not a class: the fallback
