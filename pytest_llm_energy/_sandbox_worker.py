"""Fork server that runs untrusted generated code.

Started by :mod:`pytest_llm_energy.sandbox` as ``python -I -S _sandbox_worker.py
CONFIG`` (inside bubblewrap when available). It imports nothing from the
package but its sibling ``_sandbox_*`` modules: it must run with the bare
standard library. Protocol on stdin/stdout: 4-byte big-endian length + JSON,
one job in, one result out.

Four kinds of process, all forks of this one:

- the *server* reads jobs and runs each task's test (trusted code) here;
- the *compiler*, long-lived, compiles prompt + completion (compiling runs
  nothing, but may cost quadratic memory) under limits of its own;
- the *spawner*, forked once at start-up while this process is still small,
  forks one *candidate* per check ahead of time, hands its two pipe ends to
  the server (``SCM_RIGHTS``) and later kills and reaps it. The server never
  forks per check, so the pages it writes while it runs a test are never
  copy-on-write: on a virtual machine those page faults cost more than
  anything else in a check;
- the *candidate* runs prompt + completion and answers calls of the entry
  point. It gets a new session, an empty working directory and environment,
  stdio on /dev/null, only its two pipes, resource limits, a seccomp
  allow-list, a Landlock domain of its own where the kernel has Landlock,
  and the uid of ``nobody`` (or uid 0 without capabilities) when the sandbox
  runs as root.

The test calls the candidate through the pipes and receives plain data only,
so the verdict comes from a process the candidate cannot reach.
"""

import _socket  # not socket.py: its enums and selectors would enlarge every fork
import gc
import json
import marshal
import os
import resource
import select
import signal
import struct
import sys
import time

# Modules HumanEval-style programs commonly import, loaded before any fork so
# candidates do not pay for the import. Rarer ones (decimal, statistics,
# hashlib, ...) are imported by the candidate that needs them: every module
# loaded here makes each check's fork and exit slower.
import bisect  # noqa: F401
import collections  # noqa: F401
import copy  # noqa: F401
import functools  # noqa: F401
import heapq  # noqa: F401
import itertools  # noqa: F401
import math  # noqa: F401
import operator  # noqa: F401
import re  # noqa: F401
import string  # noqa: F401
import typing  # noqa: F401

NOBODY = 65534
MAX_DETAIL_CHARS = 2000

# The confinement lives in sibling modules (standard library only). -I keeps
# this script's directory off sys.path: put it back for them alone.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _sandbox_files  # noqa: E402
import _sandbox_landlock  # noqa: E402
import _sandbox_seccomp  # noqa: E402
from _sandbox_values import (  # noqa: E402
    NotPlain,
    call_arguments,
    call_payload,
    changed,
    copy_back,
    decode,
    encode,
    exception_reply,
    parse_reply,
    rebuild_exception,
    snapshots,
)

del sys.path[0]
FILTER = _sandbox_seccomp.Filter()
LANDLOCK = _sandbox_landlock.Landlock()


# A reply larger than this is refused before it is parsed: the server parses
# it in memory, and nothing a HumanEval-style test compares needs more.
MAX_MESSAGE_BYTES = 4 << 20
_HEADER = struct.Struct(">I")


def send_message(fd, obj):
    """Candidate -> server: JSON, which the server can parse without trusting it."""
    _write_all(fd, json.dumps(obj).encode())


def send_trusted(fd, obj):
    """Server -> candidate: marshal, fast, and only ever read by the untrusted side."""
    _write_all(fd, marshal.dumps(obj))


def _write_all(fd, payload):
    data = _HEADER.pack(len(payload)) + payload
    while data:
        data = data[os.write(fd, data):]


def recv_trusted(fd):
    """One marshal message from the server; None at EOF."""
    header = _read_fd(fd, 4)
    if header is None:
        return None
    body = _read_fd(fd, _HEADER.unpack(header)[0])
    return None if body is None else marshal.loads(body)


def _read_fd(fd, size):
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def set_name(name):
    """Name this process as ``ps`` and ``top`` show it.

    Through /proc rather than ctypes' prctl: a ctypes call right after
    ``fork()`` writes to (and so copies) about a hundred pages.
    """
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY)
        try:
            os.write(fd, name)
        finally:
            os.close(fd)
    except OSError:
        pass


def _describe(exc):
    try:
        text = type(exc).__name__ + ": " + str(exc)
    except BaseException:
        text = "an exception that cannot be printed"
    return text[:MAX_DETAIL_CHARS]


# --------------------------------------------------------------------------
# the candidate
# --------------------------------------------------------------------------
# Exit statuses of a candidate that could not confine itself.
_NO_SECCOMP, _NO_LANDLOCK = 71, 72


def _close_all_but(keep, max_fd):
    """Close every descriptor from 3 up to ``max_fd`` except those in ``keep``."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max_fd)


def _limit(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass


def confine(config, keep, workdir):
    """Everything a checked process gets: its own session, directory, limits, and the kernel's refusals.

    Nothing here rests on what Python lets the checked code do: the uid, the
    Landlock domain and the seccomp filter hold against ``ctypes`` too.
    """
    # stdio already is /dev/null and the environment is empty: the server
    # set both up once for all its children.
    os.setsid()
    # The shared Landlock layer stays open until the candidate has entered it.
    _close_all_but(keep | ({LANDLOCK.shared} if config["landlock"] else set()), config["max_fd"])
    os.chdir(workdir)
    # A backstop until the job sets its own (lower) limit.
    _limit(resource.RLIMIT_CPU, 600)
    _limit(resource.RLIMIT_AS, config["memory_mb"] * 1024 * 1024)
    _limit(resource.RLIMIT_FSIZE, config["file_mb"] * 1024 * 1024)
    _limit(resource.RLIMIT_NOFILE, 64)
    _limit(resource.RLIMIT_NPROC, 1)
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_MEMLOCK, 0)
    _limit(resource.RLIMIT_MSGQUEUE, 0)
    if config["drop_to_nobody"]:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    if config["landlock"]:
        if not (FILTER.no_new_privs() and LANDLOCK.restrict(workdir)):
            os._exit(_NO_LANDLOCK)
        os.close(LANDLOCK.shared)
    if config["seccomp"] and not FILTER.install():
        os._exit(_NO_SECCOMP)
    sys.setrecursionlimit(3000)


# Sent instead of a call by a test that never called the candidate: did it load?
PING = "ping"


def candidate_process(config, requests, replies, workdir):
    """Waits, confined, for its job; runs prompt + completion; answers calls.

    It is forked and confined before its job exists, so a check does not wait
    for ``fork()`` and the confinement. Its job comes compiled (by the
    server's compiler process, which compiles but never runs checked code):
    compiling here would cost several times more, every page the compiler
    writes being a copy. There is no "ready" message: the first call's reply
    says the candidate loaded, and a candidate that did not load says so
    instead of answering.
    """
    confine(config, {requests, replies}, workdir)
    sys.dont_write_bytecode = True
    # While waiting, take the copy-on-write faults a job would take, so they
    # are not on the way of the check.
    rehearse(config["rehearsal"])
    send, recv, _exit = send_message, recv_trusted, os._exit
    job = recv(requests)
    if job is None:
        _exit(0)
    code, entry_point, timeout = job
    _limit(resource.RLIMIT_CPU, int(timeout) + 1)
    try:
        # No __name__ of its own, as in the reference harness: it resolves to
        # "builtins", so a completion's `if __name__ == "__main__":` demo does not run.
        namespace = {}
        exec(marshal.loads(code), namespace)
        function = namespace.get(entry_point)
        if not callable(function):
            send(replies, {"ready": False, "detail": "no function named " + entry_point})
            _exit(0)
    except BaseException as exc:
        send(replies, {"ready": False, "detail": "raised while loading: " + _describe(exc)})
        _exit(0)
    while True:
        request = recv(requests)
        if request is None:
            _exit(0)
        if request == PING:
            send(replies, {"ready": True})
            continue
        try:
            args, kwargs = call_arguments(request)
            taken = snapshots(args, kwargs)
        except BaseException as exc:
            send(replies, {"error": "the test's arguments did not arrive: " + _describe(exc)})
            continue
        try:
            value = function(*args, **kwargs)
        except BaseException as exc:  # SystemExit included: the test sees what was raised
            try:
                reply = exception_reply(exc, _describe)
            except BaseException as inner:
                reply = {"error": _describe(inner)}
        else:
            try:
                reply = {"value": encode(value)}
            except BaseException as exc:  # NotPlain, RecursionError, MemoryError
                reply = {"error": _describe(exc)}
        try:
            mutated = changed(args, kwargs, taken) if taken else None
        except BaseException:
            mutated = None
        if mutated:
            reply["mutated"] = mutated
        send(replies, reply)


# --------------------------------------------------------------------------
# the spawner
# --------------------------------------------------------------------------
# Spawner -> server: tag, pid, wait status, CPU seconds. "C": a new candidate,
# its two pipe ends attached; "R": a candidate reaped. Server -> spawner: a
# pid to kill and reap.
_SPAWNED, _REAPED = b"C", b"R"
_MESSAGE = struct.Struct(">1siid")
_PID = struct.Struct(">i")
# Candidates kept alive per server: one checking, one forked and confined,
# waiting for the next job, so no job waits for a fork.
POOL = 2


def _send_fds(channel, data, fds):
    rights = struct.pack("%di" % len(fds), *fds)
    channel.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])


def _recv_fds(channel, size, most):
    """A message and the descriptors that came with it."""
    data, ancillary, flags, _ = channel.recvmsg(size, _socket.CMSG_SPACE(most * 4))
    fds = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(struct.unpack("%di" % (usable // 4), payload[:usable]))
    if flags & _socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        return b"", []
    return data, fds


def _kill_all(pid, config, sandbox, candidates):
    """Kill a candidate and whatever it started (sparing the other candidates)."""
    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if config["own_pid_namespace"] and not config["seccomp"]:
        # Without seccomp a candidate may have started processes, in any
        # session or group. Everything in this namespace but the init, the
        # sandbox's own processes and the candidates still in use is a
        # leftover of a check.
        spare = (set(sandbox) | set(candidates)) - {pid}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in spare:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass


def _new_workdir(config):
    """An empty directory for one candidate, under a name no other candidate can guess or list."""
    workdir = "%s/check-%s" % (config["tmp"], os.urandom(12).hex())
    os.mkdir(workdir, 0o700)
    if config["drop_to_nobody"]:
        os.chown(workdir, NOBODY, NOBODY)
    return workdir


def _remove_workdir(workdir):
    """Remove what a (dead) candidate left, never following a link it planted; never raises."""
    try:
        os.rmdir(workdir)  # the common case: it left nothing (a link here is not followed)
        return
    except OSError:
        pass
    try:
        _sandbox_files.remove_tree(workdir)
    except Exception:
        pass


def _fork_candidate(config):
    """Fork a candidate; returns its pid, its directory and the server's ends of its pipes."""
    workdir = _new_workdir(config)
    try:
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        pid = os.fork()
    except BaseException:
        _remove_workdir(workdir)
        raise
    if pid == 0:
        try:
            os.close(requests_w)
            os.close(replies_r)
            candidate_process(config, requests_r, replies_w, workdir)
        finally:
            os._exit(70)
    os.close(requests_r)
    os.close(replies_w)
    return pid, workdir, requests_w, replies_r


def spawner_process(config, channel):
    """Keeps candidates ready; kills and reaps each one the server releases.

    Each candidate gets a working directory of its own, made when it is
    forked, under a random name, and removed once it is dead. Reaping reports
    the candidate's wait status and CPU time, plus this process's own (part
    of the cost of checks). Returns when the server is gone.
    """
    set_name(b"llm-sbx-spawner")
    if config["capless_root"]:
        drop_capabilities()
    if config["seccomp"]:
        # Once here, so each candidate only adds a short filter of its own
        # (installing the whole list costs the kernel time in every process).
        FILTER.install("spawner")
    sandbox = {1, os.getpid(), os.getppid()}
    workdirs = {}
    cpu = time.process_time()
    try:
        while True:
            while len(workdirs) < POOL:
                pid, workdir, requests_w, replies_r = _fork_candidate(config)
                workdirs[pid] = workdir
                try:
                    _send_fds(channel, _MESSAGE.pack(_SPAWNED, pid, 0, 0.0), (requests_w, replies_r))
                finally:
                    os.close(requests_w)
                    os.close(replies_r)
            request = channel.recv(_PID.size)
            pid = _PID.unpack(request)[0] if len(request) == _PID.size else None
            if pid not in workdirs:
                return  # EOF, or a request that is not ours
            _kill_all(pid, config, sandbox, workdirs)
            _, wait_status, usage = os.wait4(pid, 0)
            # Only now, with the candidate dead, is its directory touched.
            _remove_workdir(workdirs.pop(pid))
            now = time.process_time()
            used = usage.ru_utime + usage.ru_stime + now - cpu
            cpu = now
            channel.send(_MESSAGE.pack(_REAPED, pid, wait_status, used))
    except OSError:
        return  # the server is gone, or no candidate can be made: the server sees it end
    finally:
        for pid, workdir in workdirs.items():
            _kill_all(pid, config, sandbox, ())
            os.waitpid(pid, 0)
            _remove_workdir(workdir)


_CAPSET = {"x86_64": 126, "aarch64": 91}
_CAPABILITY_VERSION_3 = 0x20080522


def drop_capabilities():
    """Clear every capability of this process (and so of the candidates it forks).

    For a root sandbox whose candidates keep uid 0 (the interpreter is not
    readable by ``nobody``): root without capabilities, confined by Landlock
    and seccomp, can do no more than another user.
    """
    import ctypes

    number = _CAPSET.get(os.uname().machine)
    header = struct.pack("<Ii", _CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two (effective, permitted, inheritable) triples, all empty
    if number is None or ctypes.CDLL(None, use_errno=True).syscall(number, header, data) != 0:
        os._exit(73)


def _cpu_so_far(pid):
    """CPU seconds a live process used, from /proc (0.0 where unreadable)."""
    try:
        fd = os.open("/proc/%d/schedstat" % pid, os.O_RDONLY)
        try:
            return int(os.read(fd, 128).split()[0]) / 1e9
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return 0.0


class SpawnerGone(Exception):
    """The spawner ended (a check killed it): the server cannot go on."""


class Spawner:
    """The server's end of the spawner process."""

    def __init__(self, config):
        server_end, spawner_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                # Keep stdio (/dev/null), the channel and the shared Landlock
                # ruleset, nothing else: the client must see the server's
                # pipes close when the server ends.
                keep = {spawner_end.fileno()} | ({LANDLOCK.shared} if config["landlock"] else set())
                _close_all_but(keep, config["max_fd"])
                spawner_process(config, spawner_end)
            finally:
                os._exit(0)
        spawner_end.close()
        self.channel = server_end
        self.ready = []  # (pid, requests, replies) of candidates waiting for a job
        self.reaped = {}  # pid -> (wait status, CPU seconds)
        self.released = {}  # pid -> CPU seconds already reported

    def _receive(self):
        try:
            message, fds = _recv_fds(self.channel, _MESSAGE.size, 2)
        except OSError:
            message, fds = b"", []
        if len(message) != _MESSAGE.size:
            for fd in fds:
                os.close(fd)
            raise SpawnerGone("the sandbox's spawner process ended")
        tag, pid, wait_status, cpu = _MESSAGE.unpack(message)
        if tag == _SPAWNED and len(fds) == 2:
            self.ready.append((pid, fds[0], fds[1]))
        elif tag == _REAPED:
            self.reaped[pid] = (wait_status, cpu)
        else:
            for fd in fds:
                os.close(fd)
            raise SpawnerGone("the sandbox's spawner process sent a malformed message")

    def candidate(self):
        """The next candidate, forked and confined: (pid, requests, replies)."""
        while not self.ready:
            self._receive()
        return self.ready.pop(0)

    def release(self, pid):
        """Ask the spawner to kill and reap a candidate, without waiting.

        Meanwhile the client gets its verdict, and the candidate's exit and
        the next fork overlap with the next job's way here. Returns the CPU
        seconds the candidate used so far; the rest (its exit, the spawner's
        share) comes with a later :meth:`collect`.
        """
        so_far = _cpu_so_far(pid)
        self._kill_and_reap(pid)
        self.released[pid] = so_far
        return so_far

    def finish(self, pid):
        """Kill and reap a candidate now: (wait status, CPU seconds of the check)."""
        self._kill_and_reap(pid)
        while pid not in self.reaped:
            self._receive()
        return self.reaped.pop(pid)

    def _kill_and_reap(self, pid):
        try:
            self.channel.send(_PID.pack(pid))
        except OSError:
            raise SpawnerGone("the sandbox's spawner process ended")

    def collect(self, wait=False):
        """CPU seconds of released candidates reaped since the last call.

        With ``wait``, waits until every released candidate is reaped.
        """
        while wait and set(self.released) - set(self.reaped):
            self._receive()
        cpu = 0.0
        for pid in list(self.reaped):
            if pid in self.released:
                cpu += max(0.0, self.reaped.pop(pid)[1] - self.released.pop(pid))
        return cpu


# --------------------------------------------------------------------------
# the server: the test, calling the candidate
# --------------------------------------------------------------------------
class CandidateError(Exception):
    """The candidate raised, or returned something that is not plain data."""


class CandidateNotLoaded(BaseException):
    """prompt + completion did not load (a BaseException: test code cannot swallow it)."""


class CandidateDied(BaseException):
    """The candidate process ended in the middle of a call."""


class CandidateMisbehaved(BaseException):
    """The candidate answered with something other than a well-formed reply."""


class CheckTimeout(BaseException):
    """The check ran out of time."""


class Replies:
    """Framed messages from the candidate, read in as few system calls as possible."""

    def __init__(self, fd):
        self.fd = fd
        self.buffer = bytearray()

    def next(self, deadline):
        """One reply, or None at EOF; CheckTimeout at the deadline, CandidateError when malformed."""
        body = self.next_raw(deadline, MAX_MESSAGE_BYTES)
        if body is None:
            return None
        try:
            return parse_reply(body)
        except (ValueError, RecursionError) as exc:
            raise CandidateError("garbled reply: " + _describe(exc))

    def next_raw(self, deadline, limit):
        """One message's bytes, or None at EOF; refused unread when over ``limit`` bytes."""
        while True:
            if len(self.buffer) >= 4:
                size = _HEADER.unpack(self.buffer[:4])[0]
                if size > limit:
                    raise CandidateError("a reply of %d bytes is over the limit" % size)
                if len(self.buffer) >= 4 + size:
                    body = bytes(self.buffer[4:4 + size])
                    del self.buffer[:4 + size]
                    return body
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


class CandidateProxy:
    """What the test calls: forwards arguments, returns the candidate's plain answer.

    It remembers what went wrong even when the test swallows the exception,
    so a check whose candidate died, did not load or ran out of time is never
    a pass.
    """

    def __init__(self, requests, replies, deadline):
        self.requests = requests
        self.replies = Replies(replies)
        self.deadline = deadline
        self.loaded = None  # unknown until the first reply
        self.failure = None  # (status, detail) that overrides the test's outcome
        self.namespace = {}  # the test's: exception classes the prompt defines

    def _ask(self, payload):
        try:
            _write_all(self.requests, payload)
        except (BrokenPipeError, ConnectionError):
            # It ended. If it first said why (it did not load), that is in
            # its replies; otherwise they end here.
            pass
        try:
            reply = self.replies.next(self.deadline)
        except CheckTimeout:
            if self.failure is None:
                self.failure = ("timeout", None)
            raise
        except CandidateError as exc:  # garbled or oversized
            self._fail("failed", str(exc), CandidateMisbehaved)
        if reply is None:
            if self.loaded is None:
                self._fail("error", "the candidate process ended before it was ready", CandidateDied)
            self._fail("error", "the candidate process ended during a call", CandidateDied)
        if type(reply) is not dict:
            self._fail("failed", "the candidate sent a malformed reply", CandidateMisbehaved)
        if reply.get("ready") is False:
            self._fail("failed", str(reply.get("detail", "not loaded"))[:MAX_DETAIL_CHARS], CandidateNotLoaded)
        self.loaded = True
        return reply

    def _fail(self, status, detail, kind):
        if self.failure is None:
            self.failure = (status, detail)
        raise kind(detail)

    def __call__(self, *args, **kwargs):
        try:
            payload = call_payload(args, kwargs, marshal)
        except (NotPlain, ValueError, TypeError, RecursionError) as exc:
            raise CandidateError("the test passed something that is not plain data: " + _describe(exc))
        reply = self._ask(payload)
        if "mutated" in reply:
            try:
                copy_back(args, kwargs, reply["mutated"])
            except Exception as exc:
                self._fail("failed", "the candidate sent a malformed reply: " + _describe(exc), CandidateMisbehaved)
        if "error" in reply:
            raise rebuild_exception(reply, self.namespace, CandidateError)
        try:
            return decode(reply["value"])
        except Exception as exc:  # KeyError, ValueError, TypeError, RecursionError, MemoryError
            self._fail("failed", "the candidate sent a malformed reply: " + _describe(exc), CandidateMisbehaved)

    def confirm_loaded(self):
        """For a test that never called the candidate: did prompt + completion load?"""
        if self.loaded is None:
            self._ask(marshal.dumps(PING))


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


def run_test(job, candidate):
    """Runs the task's test here, in the server, calling the candidate through a pipe.

    The test is trusted code; only plain data comes back from the candidate.
    The candidate cannot reach this process (another uid, or this process is
    non-dumpable and ptrace is filtered), so it cannot redefine ``check``,
    patch the helpers the assertions use, or forge the verdict.
    """
    try:
        prompt_code, test_code = _compiled_test(job)
    except (SyntaxError, ValueError) as exc:
        return "error", "the problem's test does not compile: " + _describe(exc)
    try:
        namespace = {}  # not "__main__", as in the reference harness
        candidate.namespace = namespace
        exec(prompt_code, namespace)
        # In the one-program form the test sees the completed function under
        # its own name too (HumanEval/33 calls it that way).
        namespace[job["entry_point"]] = candidate
        exec(test_code, namespace)
        namespace["check"](candidate)
        candidate.confirm_loaded()
        outcome = ("passed", "")
    except CheckTimeout:
        # The candidate's deadline, or the server's alarm during the test's own work.
        if candidate.failure is None:
            raise
        outcome = None
    except (CandidateDied, CandidateNotLoaded, CandidateMisbehaved):
        outcome = None
    except BaseException as exc:
        outcome = ("failed", _describe(exc) + _test_line(exc, job["test"]))
    if candidate.failure is not None:
        if candidate.failure[0] == "timeout":
            raise CheckTimeout()
        return candidate.failure
    return outcome


MAX_PROGRAM_CHARS = 1 << 20
# Memory the compiler process may use beyond its own image: compiling folds
# constants, and a few kilobytes of chained string sums fold into gigabytes;
# at this limit CPython gives up folding them and compiles them as they are.
COMPILER_MEMORY_MB = 512
# Seconds compiling one program may take at most (the check's own timeout if shorter).
COMPILER_DEADLINE_S = 10.0


def _compiler_process(requests, replies):
    """Compiles programs sent on ``requests``; answers status byte + marshal'd code or the reason."""
    set_name(b"llm-sbx-compiler")
    while True:
        message = recv_trusted(requests)
        if message is None:
            os._exit(0)
        try:
            reply = b"+" + marshal.dumps(compile(message, "<completion>", "exec"))
        except Exception as exc:  # SyntaxError; ValueError (null bytes), RecursionError, MemoryError
            reply = b"-" + ("does not compile: " + _describe(exc)).encode("utf-8", "replace")
        _write_all(replies, reply)


class Compiler:
    """Compiling untrusted source, in a process of its own with its own limits.

    Compiling runs no code, but it may take quadratic time and memory
    (constant folding), and the server must not pay for that: the compiler
    has an address-space limit, a deadline per program, and is replaced when
    it is killed, runs out of time or dies. It is long-lived, so a check
    costs two pipe messages, not a process.
    """

    def __init__(self, config):
        self.config = config
        self.pid = None
        self._start()

    def _start(self):
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                _close_all_but({requests_r, replies_w}, self.config["max_fd"])
                _limit(resource.RLIMIT_AS, _address_space() + COMPILER_MEMORY_MB * 1024 * 1024)
                _limit(resource.RLIMIT_CORE, 0)
                if self.config["seccomp"] and not FILTER.install():
                    os._exit(_NO_SECCOMP)
                _compiler_process(requests_r, replies_w)
            finally:
                os._exit(70)
        os.close(requests_r)
        os.close(replies_w)
        self.pid, self.requests, self.replies = pid, requests_w, replies_r

    def _stop(self):
        for fd in (self.requests, self.replies):
            os.close(fd)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        os.waitpid(self.pid, 0)

    def compile(self, source, deadline_s):
        """(marshal'd code, None) or (None, why it has none)."""
        if len(source) > MAX_PROGRAM_CHARS:
            return None, "the program has %d characters, over the sandbox's limit of %d" % (
                len(source), MAX_PROGRAM_CHARS)
        deadline = time.monotonic() + min(deadline_s, COMPILER_DEADLINE_S)
        reply = None
        try:
            send_trusted(self.requests, source)
            reply = Replies(self.replies).next_raw(deadline, (MAX_PROGRAM_CHARS + 1024) * 64)
        except (CheckTimeout, CandidateError, OSError):
            pass
        if reply and reply[:1] in (b"+", b"-"):
            if reply[:1] == b"+":
                return reply[1:], None
            return None, reply[1:].decode("utf-8", "replace")
        # Killed by its limits, out of time, or broken: replace it.
        self._stop()
        self._start()
        if time.monotonic() >= deadline:
            return None, "does not compile: compiling took over %.1f s" % min(deadline_s, COMPILER_DEADLINE_S)
        return None, "does not compile: the compiler ran out of memory"


def _address_space():
    """This process's virtual memory size in bytes (0 where unknown)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def run_job(job, spawner, compiler, config):
    started = time.monotonic()
    server_cpu = time.process_time()
    earlier_cpu = spawner.collect()
    code, problem = compiler.compile(job["prompt"] + job["completion"], job["timeout"])
    if code is None:
        # Nothing to run: no candidate is used up.
        return {"status": "failed", "detail": problem, "seconds": time.monotonic() - started,
                "cpu_seconds": earlier_cpu + time.process_time() - server_cpu}
    pid, requests, replies = spawner.candidate()
    deadline = started + job["timeout"]
    try:
        try:
            send_trusted(requests, (code, job["entry_point"], job["timeout"]))
        except (BrokenPipeError, ConnectionError):
            pass  # it died; the first call reports that
        # The test is trusted, but what it computes on the candidate's answers
        # is not bounded by it: an alarm ends the check at its deadline.
        signal.setitimer(signal.ITIMER_REAL, max(0.001, deadline - time.monotonic()) + SERVER_GRACE_S)
        try:
            status, detail = run_test(job, CandidateProxy(requests, replies, deadline))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except CheckTimeout:
        status, detail = "timeout", "no result within %.1f s" % job["timeout"]
    except Exception as exc:  # a bug here must not take the server down
        status, detail = "error", "sandbox server: " + _describe(exc)
    seconds = time.monotonic() - started
    # Stop the candidate now, whatever it is doing. A candidate that answered
    # every call ended in a pass or a fail, whatever its wait status says.
    if status in ("passed", "failed"):
        wait_status, check_cpu = 0, spawner.release(pid)
    else:
        wait_status, check_cpu = spawner.finish(pid)
    os.close(requests)
    os.close(replies)
    signalled = os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None
    if signalled == signal.SIGXCPU:
        status, detail = "timeout", "CPU time limit exceeded"
    elif status == "error" and signalled not in (None, signal.SIGKILL):
        detail += " (killed by " + signal.Signals(signalled).name + ")"
    elif status == "error" and os.WIFEXITED(wait_status):
        code = os.WEXITSTATUS(wait_status)
        if code == _NO_SECCOMP:
            detail = "could not install the seccomp filter"
        elif code == _NO_LANDLOCK:
            detail = "could not enter the Landlock domain"
        else:
            detail += " (exit status %d)" % code
    return {
        "status": status,
        "detail": detail,
        "seconds": seconds,
        "cpu_seconds": earlier_cpu + check_cpu + time.process_time() - server_cpu,
    }


# Seconds the server's alarm allows beyond a check's deadline (the candidate's
# own deadline comes first; the alarm is for the test's own computation).
SERVER_GRACE_S = 0.5


def _on_alarm(signum, frame):
    raise CheckTimeout()


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


def _write_message(stream, obj):
    payload = json.dumps(obj).encode()
    stream.write(_HEADER.pack(len(payload)) + payload)


_WARM_UP_PROGRAM = (
    "from typing import List\nimport math\n\ndef f(x: List[float]) -> list:\n"
    "    'A docstring, like every HumanEval prompt.'\n"
    "    return [x, (x,), {1: x}, math.fsum(x), str(x), len(x) > 1]\n"
)


def rehearse(program, times=1):
    """Do what a candidate does with its job, on a harmless program of ours.

    Nothing of it stays behind but memory the interpreter has used (and
    freed) once, and bytecode it has specialised.
    """
    for _ in range(times):
        namespace = {}
        exec(marshal.loads(program), namespace)
        args, kwargs = call_arguments(marshal.loads(call_payload(([1.5, 2.0],), {}, marshal)))
        taken = snapshots(args, kwargs)
        reply = {"value": encode(namespace["f"](*args, **kwargs))}
        changed(args, kwargs, taken)
        json.dumps(reply)


def _warm_up():
    """Run what every candidate runs, before the spawner is forked.

    The interpreter initialises some state on first use (the compiler's AST
    types: about a hundred classes), which each candidate would otherwise
    build again, and pay for in its own copies of the pages. Run often enough,
    the bytecode is specialised, so a candidate executes it without writing to
    the code objects. Returns the program for candidates to rehearse with.
    """
    program = marshal.dumps(compile(_WARM_UP_PROGRAM, "<warm-up>", "exec"))
    rehearse(program, times=20)
    return program


def _decide_identity(config):
    """Which uid candidates run as, given what the kernel offers.

    As root, candidates drop to ``nobody``. Where ``nobody`` cannot read the
    interpreter (a private home such as ``/root``, without bubblewrap to
    expose it), they keep uid 0 without any capability, which only Landlock
    and seccomp together make safe; without both they still drop to
    ``nobody``, and modules not loaded before the fork cannot be imported.
    """
    config["drop_to_nobody"] = False
    config["capless_root"] = False
    if not config["as_root"]:
        return
    if config["nobody_can_read_interpreter"] or not (config["landlock"] and config["seccomp"]):
        config["drop_to_nobody"] = True
    else:
        config["capless_root"] = True


def _private_tmp(config):
    """Candidates' directories go here; none of them may list it, or write to it."""
    mode = 0o711 if config["drop_to_nobody"] else 0o300
    os.chmod(config["tmp"], mode)


def _limit_server_memory(config):
    """An address-space limit on the server, which parses what candidates send.

    High enough for the candidates' own limit (they can only lower it).
    """
    budget = max(config["memory_mb"], 1024) + 512
    _limit(resource.RLIMIT_AS, _address_space() + budget * 1024 * 1024)


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
    config["landlock"] = bool(config["landlock"] and LANDLOCK.abi)
    if config["landlock"]:
        try:
            LANDLOCK.prepare(*_sandbox_landlock.interpreter_paths(), checks_dir=config["tmp"])
        except OSError:
            config["landlock"] = False
    _decide_identity(config)
    _private_tmp(config)
    # A candidate may share our uid: keep it from ptrace and /proc/<pid>/mem.
    FILTER.set_dumpable(0)
    set_name(b"llm-sbx-server")
    signal.signal(signal.SIGALRM, _on_alarm)
    config["rehearsal"] = _warm_up()
    _limit_server_memory(config)
    # Candidates are short-lived copies of the spawner: a garbage collection
    # in one would touch (and so copy) every page. Freeze what exists now,
    # and let candidates collect only what they create.
    gc.collect()
    gc.freeze()
    spawner = Spawner(config)
    compiler = Compiler(config)
    # Report that we started, and what protection is in force.
    _write_message(out, {"ready": True, "seccomp": config["seccomp"], "pid": os.getpid(),
                         "landlock": LANDLOCK.abi if config["landlock"] else 0,
                         "drop_to_nobody": config["drop_to_nobody"], "capless_root": config["capless_root"]})
    while True:
        header = _read_exact(inp, 4)
        if header is None:
            break
        body = _read_exact(inp, _HEADER.unpack(header)[0])
        if body is None:
            break
        job = json.loads(body)
        try:
            if job.get("flush"):
                # The client is closing: report CPU time not reported yet.
                result = {"cpu_seconds": spawner.collect(wait=True)}
            else:
                result = run_job(job, spawner, compiler, config)
        except SpawnerGone:
            # A check killed it: end here, so the client replaces this server
            # and reports this check as an error.
            break
        _write_message(out, result)


if __name__ == "__main__":
    main()
