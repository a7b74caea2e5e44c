"""Values across the sandbox's process boundary, both ways.

Loaded by the sandbox worker (standard library only). The candidate answers
in tagged JSON, which the server parses without trusting it: only builtin data
crosses, so an object whose ``__eq__`` always returns True cannot pass an
assertion. What the test would compare is kept, though, so verdicts are those
of HumanEval's reference harness (which runs everything in one namespace):

* subclasses of plain types cross *by value*, read through the base type's
  own methods (a cheating ``__eq__`` or ``__iter__`` is never consulted), and
  the collections a test may meet (``Counter``, ``OrderedDict``,
  ``defaultdict``, ``deque``, named tuples) are rebuilt as what they are;
  ``IntEnum`` members and ``str``/``int`` subclasses arrive as the plain value
  they equal;
* ints of any size cross (as hex beyond 10,000 bits: ``str(int)`` stops at
  4,300 digits);
* an exception the candidate raises is raised again in the test as the same
  built-in class (or the prompt's own class of that name), with its
  arguments, so ``except ValueError`` in a test catches it;
* the test's arguments: ranges, iterators and subclasses go over too (marshal
  carries only exact builtins), and lists, dicts and sets the candidate
  changed in place are changed in the test's copies after the call.
"""

import builtins
import collections
import itertools
import json
import keyword

BIG_INT_BITS = 10000
MAX_DEPTH = 200
MAX_ITERATOR_ITEMS = 1_000_000
# Named tuple classes the server builds for replies, reused by (name, fields).
_NAMED_TUPLES = {}
_NAMED_TUPLES_MAX = 64


class NotPlain(Exception):
    pass


def _identifier(name):
    return type(name) is str and name.isidentifier() and not keyword.iskeyword(name) and len(name) <= 100


def _named_fields(kind, value):
    """A named tuple's class name and fields, when they are plain identifiers."""
    fields = getattr(kind, "_fields", None)
    name = getattr(kind, "__name__", None)
    if type(fields) is not tuple or len(fields) != tuple.__len__(value) or not _identifier(name):
        return None
    if not all(_identifier(f) and not f.startswith("_") for f in fields) or len(set(fields)) != len(fields):
        return None
    return name, list(fields)


def _pairs(value, depth, iterators):
    return [[encode(k, depth + 1, iterators), encode(v, depth + 1, iterators)] for k, v in dict.items(value)]


def encode(value, depth=0, iterators=False):
    """Tagged JSON for plain values; anything else raises :class:`NotPlain`.

    ``iterators`` (the test's arguments only) sends an iterator as the items
    it yields.
    """
    if depth > MAX_DEPTH:
        raise NotPlain("nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if value.bit_length() < BIG_INT_BITS else {"i": format(value, "x")}
    if kind is float:
        return {"f": repr(value)}
    if kind is list:
        return [encode(v, depth + 1, iterators) for v in value]
    if kind is tuple:
        return {"t": [encode(v, depth + 1, iterators) for v in value]}
    if kind is dict:
        return {"d": _pairs(value, depth, iterators)}
    if kind is set or kind is frozenset:
        return {"s" if kind is set else "fs": [encode(v, depth + 1, iterators) for v in value]}
    if kind is bytes:
        return {"b": value.hex()}
    if kind is complex:
        return {"c": [repr(value.real), repr(value.imag)]}
    return _encode_other(value, kind, depth, iterators)


def _encode_other(value, kind, depth, iterators):
    # Subclasses by value, through the base type's methods.
    if isinstance(value, int):  # IntEnum, IntFlag, int subclasses (bool cannot be subclassed)
        return encode(int.__pos__(value), depth)
    if isinstance(value, float):
        return encode(float.__pos__(value), depth)
    if isinstance(value, complex):
        return encode(complex.__pos__(value), depth)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return {"b" if isinstance(value, bytes) else "ba": bytes.hex(value) if isinstance(value, bytes)
                else bytearray.hex(value)}
    if isinstance(value, dict):
        for tag, base in (("C", collections.Counter), ("O", collections.OrderedDict),
                          ("D", collections.defaultdict)):
            if isinstance(value, base):
                return {tag: _pairs(value, depth, iterators)}
        return {"d": _pairs(value, depth, iterators)}
    if isinstance(value, tuple):
        items = [encode(v, depth + 1, iterators) for v in tuple.__iter__(value)]
        named = _named_fields(kind, value)
        return {"n": [named[0], named[1], items]} if named else {"t": items}
    if isinstance(value, list):
        return [encode(v, depth + 1, iterators) for v in list.__iter__(value)]
    if isinstance(value, (set, frozenset)):
        tag, base = ("s", set) if isinstance(value, set) else ("fs", frozenset)
        return {tag: [encode(v, depth + 1, iterators) for v in base.__iter__(value)]}
    if isinstance(value, collections.deque):
        return {"q": [encode(v, depth + 1, iterators) for v in collections.deque.__iter__(value)]}
    if kind is range:
        return {"r": [value.start, value.stop, value.step]}
    if iterators and hasattr(kind, "__next__"):
        items = list(itertools.islice(value, MAX_ITERATOR_ITEMS + 1))
        if len(items) > MAX_ITERATOR_ITEMS:
            raise NotPlain("an iterator of over %d items" % MAX_ITERATOR_ITEMS)
        return {"it": [encode(v, depth + 1, iterators) for v in items]}
    raise NotPlain("returned an object of type " + kind.__name__ + ", not plain data")


# Distinct values in one container of a reply that may share a hash: more only
# come from a candidate building a hash flood (ints or tuples equal modulo
# 2**61 - 1), which would make building or comparing sets and dicts quadratic
# in the server. Equal values are no flood: [0] * 1000 is fine.
MAX_EQUAL_HASHES = 64
# Values whose hash the candidate can predict (a string's is keyed per process).
_PREDICTABLE_HASH = (int, float, complex, bool, tuple, frozenset)


def _no_hash_flood(values):
    if len(values) <= MAX_EQUAL_HASHES:
        return
    buckets = {}
    for value in values:
        if not isinstance(value, _PREDICTABLE_HASH):
            continue
        try:
            key = hash(value)
        except TypeError:  # a tuple holding a list: never a set member or dict key
            continue
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = [value]
        elif value not in bucket:
            bucket.append(value)
            if len(bucket) > MAX_EQUAL_HASHES:
                raise ValueError("over %d distinct values with the same hash: a hash flood" % MAX_EQUAL_HASHES)


def _named_tuple(name, fields):
    if not _identifier(name) or type(fields) is not list or len(fields) > 255:
        raise ValueError("a malformed named tuple")
    if not all(_identifier(f) and not f.startswith("_") for f in fields) or len(set(fields)) != len(fields):
        raise ValueError("a malformed named tuple")
    key = (name, tuple(fields))
    kind = _NAMED_TUPLES.get(key)
    if kind is None:
        if len(_NAMED_TUPLES) >= _NAMED_TUPLES_MAX:
            return None  # the candidate is inventing classes: plain tuples from here
        kind = _NAMED_TUPLES[key] = collections.namedtuple(name, fields)
    return kind


def _ints(values):
    if type(values) is not list or not all(type(v) is int for v in values):
        raise ValueError("not ints")
    return values


def decode(data):
    """The value a reply encodes; ValueError (or TypeError) for anything malformed."""
    if type(data) is list:
        values = [decode(v) for v in data]
        _no_hash_flood(values)
        return values
    if type(data) is not _Tagged:
        if data is None or type(data) in (bool, int, str):
            return data
        raise ValueError("not a value")
    tag, value = data
    if tag == "f":
        return float(value)
    if tag == "i":
        if type(value) is not str:
            raise ValueError("not an int")
        return int(value, 16)
    if tag in ("t", "it", "q"):
        values = tuple(decode(v) for v in value)
        _no_hash_flood(values)
        return values if tag == "t" else iter(values) if tag == "it" else collections.deque(values)
    if tag in ("d", "C", "O", "D"):
        pairs = [(decode(k), decode(v)) for k, v in value]
        _no_hash_flood([k for k, _ in pairs])
        if tag == "C":
            return collections.Counter(dict(pairs))
        if tag == "O":
            return collections.OrderedDict(pairs)
        return dict(pairs) if tag == "d" else collections.defaultdict(None, pairs)
    if tag == "n":
        name, fields, items = value
        values = tuple(decode(v) for v in items)
        _no_hash_flood(values)
        kind = _named_tuple(name, fields)
        if kind is None:
            return values
        if len(values) != len(fields):
            raise ValueError("a named tuple of the wrong length")
        return kind._make(values)
    if tag in ("s", "fs"):
        values = [decode(v) for v in value]
        _no_hash_flood(values)
        return set(values) if tag == "s" else frozenset(values)
    if tag == "b":
        return bytes.fromhex(value)
    if tag == "ba":
        return bytearray.fromhex(value)
    if tag == "c":
        return complex(float(value[0]), float(value[1]))
    if tag == "r":
        return range(*_ints(value))
    raise ValueError("unknown tag " + repr(tag))


class _Tagged(tuple):
    """A JSON object of a reply: one (tag, value) pair, never a dict (no hashing of its keys)."""


def _reply_object(pairs):
    """A JSON object in a reply, built without hashing what the candidate chose.

    One key: a tagged value, or the reply itself. A few keys: the reply (a
    candidate that did not load says why). More: malformed.
    """
    if len(pairs) == 1:
        return _Tagged(pairs[0])
    if len(pairs) <= 4:
        return dict(pairs)
    raise ValueError("an object with %d keys" % len(pairs))


def parse(body):
    """A JSON message as a dict of its keys (or a tagged value); ValueError for anything malformed."""
    return json.loads(body, object_pairs_hook=_reply_object)


def parse_reply(body):
    """A reply as a dict of its keys; ValueError for anything malformed."""
    reply = parse(body)
    if type(reply) is _Tagged:
        return dict([reply])
    if type(reply) is not dict:
        raise ValueError("a reply is an object")
    return reply


# -- the call ----------------------------------------------------------------
def call_payload(args, kwargs, marshal):
    """What the test's call sends: marshal when it carries the arguments exactly, else tagged JSON."""
    if _exact(args) and _exact(kwargs):
        try:
            return marshal.dumps((args, kwargs))
        except ValueError:
            pass
    text = json.dumps([encode(list(args), iterators=True), encode(kwargs, iterators=True)])
    return marshal.dumps(("json", text))


_EXACT = (type(None), bool, int, float, str, bytes, complex)


def _exact(value, depth=0):
    """Whether marshal would give the candidate back exactly this (no subclass, range, iterator)."""
    kind = type(value)
    if kind in _EXACT:
        return True
    if depth > MAX_DEPTH:
        return False
    if kind in (list, tuple, set, frozenset):
        return all(_exact(v, depth + 1) for v in value)
    if kind is dict:
        return all(_exact(k, depth + 1) and _exact(v, depth + 1) for k, v in value.items())
    return False


def call_arguments(request):
    """The candidate's side of :func:`call_payload`: (args, kwargs)."""
    if len(request) == 2 and request[0] == "json":
        args, kwargs = decode(parse(request[1]))
        return args, kwargs
    return request


MUTABLE = (list, dict, set, bytearray, collections.Counter, collections.OrderedDict,
           collections.defaultdict, collections.deque)


def snapshots(args, kwargs):
    """The test's mutable arguments as text, to see after the call which the candidate changed."""
    taken = {}
    for key, value in itertools.chain(enumerate(args), kwargs.items()):
        if type(value) in MUTABLE:
            try:
                taken[key] = json.dumps(encode(value))
            except (NotPlain, RecursionError, ValueError):
                continue
    return taken


def changed(args, kwargs, taken):
    """[[key, encoded value]] of the arguments the call changed in place.

    An argument changed into something that is not plain data is left out: the
    test keeps its copy as it was.
    """
    out = []
    for key, before in taken.items():
        value = args[key] if type(key) is int else kwargs[key]
        try:
            encoded = encode(value)
            if json.dumps(encoded) != before:
                out.append([key, encoded])
        except (NotPlain, RecursionError, ValueError):
            continue
    return out


def copy_back(args, kwargs, mutated):
    """Change the test's own arguments as the candidate changed its copies."""
    if type(mutated) is not list:
        raise ValueError("not a list of changed arguments")
    for entry in mutated[:len(args) + len(kwargs)]:
        key, value = entry
        if type(key) is int and 0 <= key < len(args):
            target = args[key]
        elif type(key) is str and key in kwargs:
            target = kwargs[key]
        else:
            raise ValueError("a changed argument that was not passed")
        new = decode(value)
        if isinstance(target, collections.deque) and isinstance(new, collections.deque):
            target.clear()
            target.extend(new)
        elif isinstance(target, (list, bytearray)) and type(new) in (list, bytearray, bytes):
            target[:] = new
        elif isinstance(target, dict) and isinstance(new, dict):
            target.clear()
            target.update(new)
        elif isinstance(target, set) and type(new) is set:
            target.clear()
            target |= new
        else:
            raise ValueError("a changed argument of another type")


# -- exceptions ----------------------------------------------------------------
def exception_reply(exc, describe):
    """The reply for an exception the candidate's function raised."""
    kind = type(exc)
    names = [c.__name__ for c in kind.__mro__ if isinstance(getattr(c, "__name__", None), str)][:64]
    try:
        arguments = encode(tuple(exc.args))
    except (NotPlain, RecursionError, TypeError, ValueError):
        try:
            arguments = encode((str(exc),))
        except BaseException:
            arguments = None
    return {"error": describe(exc), "raised": names, "args": arguments}


class CandidateRaised(BaseException):
    """The candidate raised a BaseException that is no Exception (SystemExit, KeyboardInterrupt):
    as in the reference, no ``except Exception`` in the test catches it."""


def rebuild_exception(reply, namespace, fallback):
    """The exception to raise in the test for a candidate's ``{"error", "raised", "args"}`` reply.

    The first class of the candidate's exception's MRO that the test's
    namespace (the prompt's own exception classes) or the builtins define, with
    the candidate's arguments. ``fallback(text)`` when there is none.
    """
    text = str(reply.get("error", ""))
    names = reply.get("raised")
    if type(names) is not list:
        return fallback(text)
    kind = None
    for name in names[:64]:
        if type(name) is not str:
            continue
        found = namespace.get(name) if name in namespace else builtins.__dict__.get(name)
        if isinstance(found, type) and issubclass(found, BaseException):
            kind = found
            break
    if kind is None or kind is BaseException:
        return fallback(text)
    if not issubclass(kind, Exception):
        return CandidateRaised(text)
    arguments = reply.get("args")
    try:
        values = decode(arguments) if arguments is not None else (text,)
        return kind(*values) if type(values) is tuple else kind(text)
    except Exception:
        try:
            return kind(text)
        except Exception:
            return fallback(text)
