"""Fork server that runs untrusted generated code: two forked processes per check.

Started by :mod:`pytest_llm_energy.sandbox` as ``python -I -S _sandbox_worker.py
CONFIG`` (inside bubblewrap when available). It imports nothing from the
package: it must run with the bare standard library. Protocol on stdin/stdout:
4-byte big-endian length + JSON, one job in, one result out.

A check forks a *candidate* process, which runs prompt + completion and answers
calls of the entry point. The task's test (trusted) runs here in the server and
calls the candidate through a pipe, receiving plain data only, so the verdict
comes from a process the candidate cannot reach. The candidate gets a new
session, an empty working directory and environment, stdio on /dev/null, only
its two pipes, resource limits, a seccomp filter against new processes,
threads, network sockets and ptrace, and the uid of ``nobody`` when the server
is root.
"""

import ctypes
import gc
import errno
import json
import os
import platform
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time

# Modules HumanEval-style programs commonly import, loaded before any fork so
# checks do not pay for the import, and so a candidate running as nobody can
# use them where the interpreter's own files are not readable by nobody.
import bisect  # noqa: F401
import collections  # noqa: F401
import copy  # noqa: F401
import decimal  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import heapq  # noqa: F401
import itertools  # noqa: F401
import math  # noqa: F401
import operator  # noqa: F401
import random  # noqa: F401
import re  # noqa: F401
import statistics  # noqa: F401
import string  # noqa: F401
import typing  # noqa: F401

NOBODY = 65534
MAX_DETAIL_CHARS = 2000

# --------------------------------------------------------------------------
# seccomp: no new processes or threads, no sockets but AF_UNIX, no ptrace
# --------------------------------------------------------------------------
_SYSCALLS = {
    # machine: (audit arch, {name: number})
    "x86_64": (0xC000003E, {"clone": 56, "fork": 57, "vfork": 58, "clone3": 435, "socket": 41,
                            "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311}),
    "aarch64": (0xC00000B7, {"clone": 220, "clone3": 435, "socket": 198,
                             "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271}),
}
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
_AF_UNIX = 1
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def _seccomp_program(arch, numbers):
    """A classic-BPF seccomp filter, built by hand (the stdlib has no libseccomp)."""
    ins = []

    def op(code, k, jt=0, jf=0):
        ins.append((code, jt, jf, k))

    deny_proc = _SECCOMP_RET_ERRNO | errno.EAGAIN
    deny_net = _SECCOMP_RET_ERRNO | errno.EACCES
    op(_BPF_LD_W_ABS, 4)  # seccomp_data.arch
    op(_BPF_JEQ_K, arch, 1, 0)
    op(_BPF_RET_K, _SECCOMP_RET_ERRNO | errno.ENOSYS)  # a foreign ABI: refuse everything
    op(_BPF_LD_W_ABS, 0)  # seccomp_data.nr
    op(_BPF_JEQ_K, numbers["clone3"], 0, 1)
    op(_BPF_RET_K, deny_proc)
    for name in ("fork", "vfork"):
        if name in numbers:
            op(_BPF_JEQ_K, numbers[name], 0, 1)
            op(_BPF_RET_K, deny_proc)
    # Threads too: nothing in a check needs them.
    op(_BPF_JEQ_K, numbers["clone"], 0, 1)
    op(_BPF_RET_K, deny_proc)
    for name in ("ptrace", "process_vm_readv", "process_vm_writev"):
        op(_BPF_JEQ_K, numbers[name], 0, 1)
        op(_BPF_RET_K, _SECCOMP_RET_ERRNO | errno.EPERM)
    op(_BPF_JEQ_K, numbers["socket"], 0, 4)
    op(_BPF_LD_W_ABS, 16)  # args[0] low word: address family
    op(_BPF_JEQ_K, _AF_UNIX, 0, 1)
    op(_BPF_RET_K, _SECCOMP_RET_ALLOW)
    op(_BPF_RET_K, deny_net)
    op(_BPF_RET_K, _SECCOMP_RET_ALLOW)
    return ins


class _Filter:
    """The compiled filter and prctl, prepared once in the server before any fork."""

    def __init__(self):
        self.ready = False
        spec = _SYSCALLS.get(platform.machine())
        if spec is None or sys.byteorder != "little":
            return
        program = _seccomp_program(*spec)

        class SockFilter(ctypes.Structure):
            _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                        ("k", ctypes.c_uint)]

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

        self._filters = (SockFilter * len(program))(*[SockFilter(*i) for i in program])
        self._prog = SockFprog(len(program), self._filters)
        try:
            self._prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
        self._address = ctypes.addressof(self._prog)
        self.ready = True

    def install(self):
        """Install the filter in this process; False where unsupported."""
        if not self.ready:
            return False
        if self._prctl(_PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
            return False
        return self._prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, self._address, 0, 0) == 0

    def set_dumpable(self, value):
        return self.ready and self._prctl(_PR_SET_DUMPABLE, value, None, 0, 0) == 0


_PR_SET_DUMPABLE = 4
FILTER = _Filter()


# --------------------------------------------------------------------------
# values across the process boundary: plain data only
# --------------------------------------------------------------------------
class NotPlain(Exception):
    pass


def encode(value, depth=0):
    """Tagged JSON for plain values; anything else raises :class:`NotPlain`.

    Only builtin data crosses from the candidate to the test, so an object
    whose ``__eq__`` always returns True cannot pass an assertion.
    """
    if depth > 200:
        raise NotPlain("nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        return {"f": repr(value)}
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    if kind is tuple:
        return {"t": [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is set or kind is frozenset:
        return {"s" if kind is set else "fs": [encode(v, depth + 1) for v in value]}
    if kind is bytes:
        return {"b": value.hex()}
    if kind is complex:
        return {"c": [repr(value.real), repr(value.imag)]}
    raise NotPlain("returned an object of type " + kind.__name__ + ", not plain data")


def decode(data):
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    (tag, value), = data.items()
    if tag == "f":
        return float(value)
    if tag == "t":
        return tuple(decode(v) for v in value)
    if tag == "d":
        return {decode(k): decode(v) for k, v in value}
    if tag == "s":
        return {decode(v) for v in value}
    if tag == "fs":
        return frozenset(decode(v) for v in value)
    if tag == "b":
        return bytes.fromhex(value)
    if tag == "c":
        return complex(float(value[0]), float(value[1]))
    raise ValueError("unknown tag " + repr(tag))


MAX_MESSAGE_BYTES = 16 << 20


def send_message(fd, obj):
    payload = json.dumps(obj).encode()
    data = struct.pack(">I", len(payload)) + payload
    while data:
        data = data[os.write(fd, data):]


def recv_message(fd):
    header = _read_fd(fd, 4)
    if header is None:
        return None
    size = struct.unpack(">I", header)[0]
    if size > MAX_MESSAGE_BYTES:
        raise ValueError("message of %d bytes is over the limit" % size)
    body = _read_fd(fd, size)
    if body is None:
        return None
    return json.loads(body)


def _read_fd(fd, size):
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _describe(exc):
    try:
        text = type(exc).__name__ + ": " + str(exc)
    except BaseException:
        text = "an exception that cannot be printed"
    return text[:MAX_DETAIL_CHARS]


# --------------------------------------------------------------------------
# the two processes of a check
# --------------------------------------------------------------------------
def _limit(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass


def confine(config, keep, workdir, drop):
    """Everything a checked process gets: its own session, directory, limits."""
    # stdio already is /dev/null and the environment is empty: the server
    # set both up once for all its children.
    os.setsid()
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, config["max_fd"])
    os.chdir(workdir)
    # A backstop until the job sets its own (lower) limit.
    _limit(resource.RLIMIT_CPU, 600)
    _limit(resource.RLIMIT_AS, config["memory_mb"] * 1024 * 1024)
    _limit(resource.RLIMIT_FSIZE, config["file_mb"] * 1024 * 1024)
    _limit(resource.RLIMIT_NOFILE, 64)
    _limit(resource.RLIMIT_NPROC, 1)
    _limit(resource.RLIMIT_CORE, 0)
    if drop:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    if config["seccomp"] and not FILTER.install():
        os._exit(71)
    sys.setrecursionlimit(3000)


def candidate_process(config, requests, replies, workdir):
    """Waits, confined, for its job; runs prompt + completion; answers calls.

    It is forked and confined before its job exists, so a check does not wait
    for ``fork()`` and the confinement.
    """
    confine(config, {requests, replies}, workdir, config["drop_to_nobody"])
    # No raw memory access for the checked code.
    for name in ("ctypes", "_ctypes"):
        sys.modules[name] = None
    send, recv, _exit = send_message, recv_message, os._exit
    job = recv(requests)
    if job is None:
        _exit(0)
    _limit(resource.RLIMIT_CPU, int(job["timeout"]) + 1)
    try:
        namespace = {"__name__": "__main__"}
        exec(compile(job["prompt"] + job["completion"], "<completion>", "exec"), namespace)
        function = namespace.get(job["entry_point"])
        if not callable(function):
            send(replies, {"ready": False, "detail": "no function named " + job["entry_point"]})
            _exit(0)
    except SyntaxError as exc:
        send(replies, {"ready": False, "detail": "does not compile: " + _describe(exc)})
        _exit(0)
    except BaseException as exc:
        send(replies, {"ready": False, "detail": "raised while loading: " + _describe(exc)})
        _exit(0)
    send(replies, {"ready": True})
    while True:
        request = recv(requests)
        if request is None:
            _exit(0)
        try:
            value = function(*decode(request["args"]), **decode(request["kwargs"]))
            reply = {"value": encode(value)}
        except BaseException as exc:  # SystemExit included: the test sees it as an error
            reply = {"error": _describe(exc)}
        send(replies, reply)


class CandidateError(Exception):
    """The candidate raised, or returned something that is not plain data."""


class CandidateDied(Exception):
    """The candidate process ended in the middle of a call."""


class CheckTimeout(BaseException):
    """The check ran out of time (a BaseException: test code cannot swallow it)."""


class Replies:
    """Framed messages from the candidate, read in as few system calls as possible."""

    def __init__(self, fd):
        self.fd = fd
        self.buffer = b""

    def next(self, deadline):
        """One message, or None at EOF; CheckTimeout at the deadline."""
        while True:
            if len(self.buffer) >= 4:
                size = struct.unpack(">I", self.buffer[:4])[0]
                if size > MAX_MESSAGE_BYTES:
                    raise CandidateError("a reply of %d bytes is over the limit" % size)
                if len(self.buffer) >= 4 + size:
                    body, self.buffer = self.buffer[4:4 + size], self.buffer[4 + size:]
                    try:
                        return json.loads(body)
                    except ValueError as exc:
                        raise CandidateError("garbled reply: " + _describe(exc))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckTimeout()
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk


def _test_line(exc, test):
    import traceback

    lines = test.splitlines()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == "<test>" and frame.lineno and 0 < frame.lineno <= len(lines):
            return " at test line %d: %s" % (frame.lineno, lines[frame.lineno - 1].strip()[:200])
    return ""


_COMPILED = {}
_COMPILED_MAX = 512


def _compile_prompt(prompt):
    """The prompt as a module, for the helpers the test may call.

    HumanEval prompts end with a docstring, a valid body; a bare signature is
    completed with ``pass``. A prompt that still does not compile contributes
    nothing (the test then sees only the candidate).
    """
    for suffix in ("", "    pass\n", "\n    pass\n"):
        try:
            return compile(prompt + suffix, "<prompt>", "exec")
        except (SyntaxError, ValueError):
            continue
    return compile("", "<prompt>", "exec")


def _compiled_test(job):
    """Prompt and test compiled once per task: checks of one task repeat them."""
    key = (job["prompt"], job["test"])
    code = _COMPILED.get(key)
    if code is None:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        code = (_compile_prompt(job["prompt"]), compile(job["test"], "<test>", "exec"))
        _COMPILED[key] = code
    return code


def run_test(job, requests, replies, deadline):
    """Runs the task's test here, in the server, calling the candidate through a pipe.

    The test is trusted code; only plain data comes back from the candidate.
    The candidate cannot reach this process (another uid, or this process is
    non-dumpable and ptrace is filtered), so it cannot redefine ``check``,
    patch the helpers the assertions use, or forge the verdict.
    """
    replies = Replies(replies)
    try:
        ready = replies.next(deadline)
    except CandidateError as exc:
        return "failed", str(exc)
    if ready is None:
        return "error", "the candidate process ended before it was ready"
    if ready.get("ready") is not True:
        return "failed", str(ready.get("detail", "not ready"))[:MAX_DETAIL_CHARS]

    def candidate(*args, **kwargs):
        try:
            send_message(requests, {"args": encode(list(args)), "kwargs": encode(kwargs)})
        except (BrokenPipeError, ConnectionError):
            raise CandidateDied("the candidate process ended during a call")
        reply = replies.next(deadline)
        if reply is None:
            raise CandidateDied("the candidate process ended during a call")
        if "error" in reply:
            raise CandidateError(str(reply["error"]))
        return decode(reply["value"])

    try:
        prompt_code, test_code = _compiled_test(job)
    except (SyntaxError, ValueError) as exc:
        return "error", "the problem's test does not compile: " + _describe(exc)
    try:
        namespace = {"__name__": "__main__"}
        exec(prompt_code, namespace)
        # In the one-program form the test sees the completed function under
        # its own name too (HumanEval/33 calls it that way).
        namespace[job["entry_point"]] = candidate
        exec(test_code, namespace)
        namespace["check"](candidate)
    except CandidateDied as exc:
        return "error", str(exc)
    except CheckTimeout:
        raise
    except BaseException as exc:
        return "failed", _describe(exc) + _test_line(exc, job["test"])
    return "passed", ""


# --------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------
def _kill_all(pid, config):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if config["own_pid_namespace"]:
        # Everything in this namespace but the init and us is a leftover of a
        # check, whatever session or group it moved itself to.
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in (1, me):
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass


def _empty(directory):
    """Remove whatever a check left in the shared working directory."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


class Candidate:
    """A forked, confined candidate process waiting for its job."""

    def __init__(self, config):
        self.config = config
        requests_r, self.requests = os.pipe()
        self.replies, replies_w = os.pipe()
        self.workdir = config["workdir"]
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(self.requests)
                os.close(self.replies)
                candidate_process(config, requests_r, replies_w, self.workdir)
            finally:
                os._exit(70)
        os.close(requests_r)
        os.close(replies_w)
        self.wait_status = None
        self.cpu_seconds = 0.0

    def finish(self):
        """Kill what is left of the check, reap it, clean its directory."""
        if self.wait_status is not None:
            return
        try:
            os.close(self.requests)  # a waiting candidate reads EOF and exits
        except OSError:
            pass
        _kill_all(self.pid, self.config)
        _, self.wait_status, usage = os.wait4(self.pid, 0)
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        os.close(self.replies)
        _empty(self.workdir)


def run_job(job, candidate, config):
    started = time.monotonic()
    server_cpu = time.process_time()
    try:
        try:
            send_message(candidate.requests, job)
        except (BrokenPipeError, ConnectionError):
            pass  # it died; run_test reports that
        status, detail = run_test(job, candidate.requests, candidate.replies, started + job["timeout"])
    except CheckTimeout:
        status, detail = "timeout", "no result within %.1f s" % job["timeout"]
    except Exception as exc:  # a bug here must not take the server down
        status, detail = "error", "sandbox server: " + _describe(exc)
    finally:
        # Stop the candidate now, whatever it is doing; reaping can wait.
        _kill_all(candidate.pid, config)
    seconds = time.monotonic() - started
    candidate.finish()
    wait_status = candidate.wait_status
    signalled = os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None
    if signalled == signal.SIGXCPU:
        status, detail = "timeout", "CPU time limit exceeded"
    elif status == "error" and signalled not in (None, signal.SIGKILL):
        detail += " (killed by " + signal.Signals(signalled).name + ")"
    elif status == "error" and os.WIFEXITED(wait_status):
        if os.WEXITSTATUS(wait_status) == 71:
            detail = "could not install the seccomp filter"
        else:
            detail += " (exit status %d)" % os.WEXITSTATUS(wait_status)
    return {
        "status": status,
        "detail": detail,
        "seconds": seconds,
        "cpu_seconds": candidate.cpu_seconds + time.process_time() - server_cpu,
    }


def _read_exact(stream, size):
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _seccomp_works():
    """Fork a probe that installs the filter and must then fail to fork."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if FILTER.install():
                try:
                    os.fork()
                    code = 2  # not blocked (the probe's child exits at once below)
                except OSError:
                    code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def main():
    config = json.loads(sys.argv[1])
    # Keep the protocol on private descriptors; point stdio at /dev/null.
    inp = os.fdopen(os.dup(0), "rb", buffering=0)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    config["max_fd"] = max(inp.fileno(), out.fileno(), devnull) + 64
    os.environ.clear()
    config["seccomp"] = config["seccomp"] and _seccomp_works()
    # The candidate may share our uid: keep it from ptrace and /proc/<pid>/mem.
    FILTER.set_dumpable(0)
    # Children are short-lived copies of this process: a garbage collection in
    # one would touch (and so copy) every page of the parent. Freeze what
    # exists now, and let children collect only what they create.
    gc.collect()
    gc.freeze()
    # Report that we started, and what protection is in force.
    ready = {"ready": True, "seccomp": config["seccomp"], "pid": os.getpid()}
    payload = json.dumps(ready).encode()
    out.write(struct.pack(">I", len(payload)) + payload)
    # One working directory for the candidates of this server, one at a time.
    config["workdir"] = tempfile.mkdtemp(prefix="check-", dir=config["tmp"])
    if config["drop_to_nobody"]:
        os.chown(config["workdir"], NOBODY, NOBODY)
    candidate = Candidate(config)
    while True:
        header = _read_exact(inp, 4)
        if header is None:
            break
        body = _read_exact(inp, struct.unpack(">I", header)[0])
        if body is None:
            break
        job = json.loads(body)
        result = run_job(job, candidate, config)
        payload = json.dumps(result).encode()
        out.write(struct.pack(">I", len(payload)) + payload)
        # While the client reads the result, prepare the next candidate.
        candidate = Candidate(config)
    candidate.finish()


if __name__ == "__main__":
    main()
