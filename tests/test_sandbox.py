"""The sandbox against ordinary and hostile completions, in both isolation modes."""

import os
import shutil
import socket
import time

import pytest

from pytest_llm_energy.sandbox import Sandbox, SandboxError

from sandbox_support import (  # noqa: E402,F401  (box is a fixture)
    ADD, MODES, PROBE, assert_healthy, box, parent_of, sandbox_workers, sees_only_its_uid_files,
    settled_worker_count,
)


# -- ordinary results ------------------------------------------------------------

def test_correct_completion_passes(box):
    result = box.check(ADD, "    return a + b\n")
    assert result.passed and result.status == "passed" and result.detail == ""
    assert 0 < result.seconds < 2


def test_wrong_completion_fails_naming_the_assertion(box):
    result = box.check(ADD, "    return a - b\n")
    assert not result.passed and result.status == "failed"
    assert "AssertionError" in result.detail and "test line 2" in result.detail


def test_syntax_error_fails(box):
    result = box.check(ADD, "    return a +\n")
    assert result.status == "failed" and "does not compile" in result.detail


def test_missing_entry_point_fails(box):
    result = box.check(ADD, "    return a + b\nadd = 3\n")
    assert result.status == "failed" and "no function named add" in result.detail


def test_exception_in_candidate_fails_with_its_message(box):
    result = box.check(ADD, "    raise ValueError('nope')\n")
    assert result.status == "failed" and "ValueError: nope" in result.detail


def test_check_many_runs_in_parallel_and_keeps_order(box):
    items = [(ADD, "    return a + b\n"), (ADD, "    return 0\n")] * 4
    assert [r.passed for r in box.check_many(items)] == [True, False] * 4


def test_cpu_time_of_checks_is_accounted(box):
    before = box.cpu_seconds
    box.check(ADD, "    s = 0\n    for i in range(300000):\n        s += i\n    return a + b\n")
    assert box.cpu_seconds - before > 0.005


# -- hostile completions ------------------------------------------------------------

def test_infinite_loop_times_out(box):
    started = time.monotonic()
    result = box.check(ADD, "    while True:\n        pass\n", timeout=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - started < 5
    assert_healthy(box)


def test_sleeping_forever_times_out_on_the_wall_clock(box):
    result = box.check(ADD, "    import time\n    time.sleep(100)\n", timeout=1.0)
    assert result.status == "timeout" and "no result within" in result.detail
    assert_healthy(box)


def test_fork_bomb_cannot_create_processes(box):
    workers_before = settled_worker_count()
    bomb = (
        "    import os\n"
        "    made = 0\n"
        "    for _ in range(200):\n"
        "        try:\n"
        "            if os.fork() == 0:\n"
        "                while True:\n"
        "                    os.fork()\n"
        "            made += 1\n"
        "        except OSError:\n"
        "            pass\n"
        "    assert made == 0, made\n"
        "    return a + b\n"
    )
    result = box.check(ADD, bomb)
    assert result.passed, result.detail  # every fork was refused
    assert settled_worker_count() == workers_before
    assert box.check(ADD, "    import subprocess\n    subprocess.run(['true'])\n    return a + b\n").status == "failed"
    assert box.check(ADD, "    import threading\n    threading.Thread(target=print).start()\n"
                          "    return a + b\n").status == "failed"
    assert_healthy(box)


def test_memory_bomb_is_contained(box):
    result = box.check(ADD, "    x = bytearray(8 * 1024 ** 3)\n    return a + b\n")
    assert result.status == "failed" and "MemoryError" in result.detail
    result = box.check(ADD, "    x = []\n    while True:\n        x.append(' ' * 10 ** 6)\n")
    assert result.status in ("failed", "timeout", "error")
    assert_healthy(box)


def test_files_outside_the_sandbox_are_untouched(box, tmp_path):
    if sees_only_its_uid_files(box):
        pytest.skip("reduced isolation: no Landlock here, checked code reaches its uid's files (see isolation_note)")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.chmod(tmp_path, 0o777)  # even where the directory is open to everyone
    attack = (
        "    import os, shutil\n"
        f"    for action in (lambda: os.remove({str(victim)!r}),\n"
        f"                   lambda: open({str(tmp_path / 'planted.txt')!r}, 'w').write('x'),\n"
        f"                   lambda: shutil.rmtree({str(tmp_path)!r}),\n"
        "                   lambda: open('/etc/planted', 'w').write('x')):\n"
        "        try:\n"
        "            action()\n"
        "        except OSError:\n"
        "            pass\n"
        "    open('scratch.txt', 'w').write('fine')  # its own directory is writable\n"
        "    return a + b\n"
    )
    result = box.check(ADD, attack)
    assert result.passed, result.detail
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "planted.txt").exists() and not os.path.exists("/etc/planted")


def test_network_connections_are_refused(box):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    attack = (
        "    import socket\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')\n"
        "    return a + b\n"
    )
    try:
        result = box.check(ADD, attack)
        assert result.status == "failed" and ("PermissionError" in result.detail or "refused" in result.detail)
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


def test_environment_secrets_are_not_visible(box, monkeypatch):
    if sees_only_its_uid_files(box):
        pytest.skip("reduced isolation: no Landlock here, checked code reaches its uid's files (see isolation_note)")
    monkeypatch.setenv("LLM_ENERGY_TEST_SECRET", "hunter2")
    probe = (
        "    import os\n"
        "    found = [k for k, v in os.environ.items() if 'hunter2' in v]\n"
        "    try:\n"
        "        pids = os.listdir('/proc')\n"
        "    except OSError:\n"
        "        pids = [str(n) for n in range(1, 5000)]\n"
        "    for pid in pids:\n"
        "        try:\n"
        "            if b'hunter2' in open('/proc/%s/environ' % pid, 'rb').read():\n"
        "                found.append(pid)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return found\n"
    )
    result = box.check(PROBE, probe)
    assert result.passed, result.detail
    assert os.environ["LLM_ENERGY_TEST_SECRET"] == "hunter2"


def test_killing_the_parent_leaves_the_harness_working(box):
    result = box.check(ADD, "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return a + b\n")
    # Refused (another uid: the call raises), or the worker died and was
    # replaced; either way later checks still work.
    assert result.status in ("failed", "error")
    assert_healthy(box)
    assert len(sandbox_workers()) >= 2


def test_killing_every_visible_process_stays_inside_the_pid_namespace(box):
    if box.isolation != "bwrap":
        pytest.skip("only a pid namespace hides the host's processes")
    attack = (
        "    import os, signal\n"
        "    for pid in os.listdir('/proc'):\n"
        "        if pid.isdigit() and int(pid) != os.getpid():\n"
        "            try:\n"
        "                os.kill(int(pid), signal.SIGKILL)\n"
        "            except OSError:\n"
        "                pass\n"
        "    return a + b\n"
    )
    box.check(ADD, attack)
    assert_healthy(box)  # and this test process is still alive to say so


@pytest.mark.parametrize("exit_call, status", [
    ("import sys; sys.exit(0)", "failed"),
    ("raise SystemExit(0)", "failed"),
    ("import os; os._exit(0)", "error"),
])
def test_exiting_is_never_a_pass(box, exit_call, status):
    result = box.check(ADD, f"    {exit_call}\n")
    assert result.status == status and not result.passed
    # At module level too, before the test could run.
    result = box.check(ADD, f"    return a + b\n{exit_call}\n")
    assert not result.passed
    assert_healthy(box)


def test_gigabytes_of_output_go_nowhere(box, capfd):
    result = box.check(ADD, "    import sys\n    for _ in range(20000):\n        sys.stdout.write('x' * 100000)\n"
                            "        sys.stderr.write('y' * 100000)\n    return a + b\n", timeout=2.0)
    assert result.status in ("passed", "timeout")
    out, err = capfd.readouterr()
    assert "xxxx" not in out and "yyyy" not in err
    assert_healthy(box)


def test_deep_recursion_is_contained(box):
    result = box.check(ADD, "    def f(n):\n        return f(n + 1)\n    return f(0)\n")
    assert result.status == "failed" and "RecursionError" in result.detail
    result = box.check(ADD, "    import sys\n    sys.setrecursionlimit(10 ** 7)\n"
                            "    def f(n):\n        return f(n + 1)\n    return f(0)\n")
    assert not result.passed
    assert_healthy(box)


def test_closing_inherited_descriptors_is_an_error_not_a_pass(box):
    result = box.check(ADD, "    import os\n    os.closerange(0, 4096)\n    return a + b\n")
    assert result.status == "error" and not result.passed
    assert_healthy(box)


# -- tampering with the test harness ------------------------------------------

@pytest.mark.parametrize("completion", [
    # Redefine check after the solution.
    "    return a - b\n\ndef check(candidate):\n    pass\n",
    # Patch the builtin the assertions use, then answer wrongly.
    "    import builtins\n    builtins.abs = lambda x: 0\n    return 0\n",
    # An object equal to everything.
    "    class Equal:\n        def __eq__(self, other):\n            return True\n        def __abs__(self):\n"
    "            return 0\n    return Equal()\n",
    # Swallow the test into an unterminated string.
    "    return 0\n'''\n",
    # Write fake verdicts on every descriptor.
    "    import os\n    for fd in range(64):\n        try:\n            os.write(fd, b'passed\\n')\n"
    "        except OSError:\n            pass\n    return 0\n",
    # Reach into the caller's frame to find and replace the test.
    "    import sys\n    f = sys._getframe()\n    while f:\n        f.f_globals['check'] = lambda c: None\n"
    "        f = f.f_back\n    return 0\n",
    # Install a trace hook that swallows assertions.
    "    import sys\n    sys.settrace(lambda *a: None)\n    return 0\n",
], ids=["redefine-check", "patch-builtins", "always-equal", "swallow-test", "forge-verdict", "frame-walk", "settrace"])
def test_tampering_cannot_turn_a_wrong_answer_into_a_pass(box, completion):
    result = box.check(ADD, completion)
    assert not result.passed, result.detail
    assert result.status in ("failed", "error")
    assert_healthy(box)


def test_a_test_that_swallows_exceptions_cannot_hide_a_dead_candidate(box):
    swallowing = {
        "prompt": "def add(a, b):\n",
        "test": "def check(candidate):\n    for _ in range(3):\n        try:\n            candidate(1, 2)\n"
                "        except BaseException:\n            pass\n",
        "entry_point": "add",
    }
    died = box.check(swallowing, "    import os\n    os._exit(3)\n")
    assert died.status == "error" and not died.passed
    not_loaded = box.check(swallowing, "    return a + b\nraise ValueError('at import')\n")
    assert not_loaded.status == "failed" and "raised while loading" in not_loaded.detail
    assert_healthy(box)


@pytest.mark.parametrize("frame", [
    b"\x00\x00\x00\x03[1]",  # not an object
    b"\x00\x00\x00\x02{}",  # neither a value nor an error
    b'\x00\x00\x00\x0d{"value": {}}',  # a tag that does not decode
    b"\xff\xff\xff\xff",  # over the size limit
    b'\x00\x00\x00\x03{"x',  # not JSON
], ids=["list", "empty", "bad-tag", "oversized", "not-json"])
def test_forged_replies_fail_even_under_a_test_that_swallows_exceptions(box, frame):
    swallowing = {
        "prompt": "def add(a, b):\n",
        "test": "def check(candidate):\n    for a, b in [(1, 2), (2, 3), (3, 4)]:\n        try:\n"
                "            assert candidate(a, b) == a + b\n        except Exception:\n            pass\n",
        "entry_point": "add",
    }
    forger = (
        "    import os\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        f"            os.write(fd, {frame!r})\n"
        "        except OSError:\n"
        "            pass\n"
        "    return a + b + 1\n"
    )
    # This test passes any answer; a reply that is not well formed still fails the check.
    assert box.check(swallowing, "    return a + b + 1\n").passed
    result = box.check(swallowing, forger)
    assert result.status == "failed" and not result.passed, result
    assert_healthy(box)


def test_a_test_that_never_calls_the_candidate_still_needs_it_to_load(box):
    lazy = {"prompt": "def add(a, b):\n", "test": "def check(candidate):\n    pass\n", "entry_point": "add"}
    assert box.check(lazy, "    return a + b\n").passed
    # Many times: the candidate says why and exits, maybe before it is asked.
    for problem in [lazy, ADD] * 30:
        result = box.check(problem, "    return a + b\nraise ValueError('at import')\n")
        assert result.status == "failed" and "ValueError" in result.detail, result


# -- between checks ----------------------------------------------------------------

def test_signals_to_other_processes_are_refused(box):
    if not box._all[0].seccomp:
        pytest.skip("no seccomp filter on this platform")
    # Even where the checked code shares a uid with the sandbox's processes.
    probe = (
        "    import os, signal\n"
        "    for target in (os.getppid(), 1, os.getpid()):\n"
        "        try:\n"
        "            os.kill(target, 0)\n"
        "            return None\n"
        "        except PermissionError:\n"
        "            pass\n"
        "    return a + b\n"
    )
    result = box.check(ADD, probe)
    assert result.passed, result.detail


def test_files_left_by_one_check_are_gone_for_the_next(box):
    writer = ("    import os\n    if not os.path.exists('left.txt'):\n        open('left.txt', 'w').write('x')\n"
              "        open('other.bin', 'wb').write(b'y' * 4096)\n    return a + b\n")
    reader = "    import os\n    assert os.listdir('.') == [], os.listdir('.')\n    return a + b\n"
    for _ in range(3):
        assert box.check(ADD, writer).passed
        result = box.check(ADD, reader)
        assert result.passed, result.detail
    if box.isolation == "subprocess":
        # Only the candidates alive now (at most two per worker) have a directory.
        time.sleep(0.2)
        os.chmod(box._private_tmp, 0o700)  # unlistable while the sandbox runs
        assert len(os.listdir(box._private_tmp)) <= 2 * box.workers


def test_a_check_makes_no_directories_links_or_special_files(box):
    if not box._all[0].seccomp:
        pytest.skip("no seccomp filter on this platform")
    attempts = (
        "    import os\n    refused = 0\n"
        "    for make in (lambda: os.mkdir('d'), lambda: os.symlink('/etc', 'l'), lambda: os.link('f', 'h'),\n"
        "                 lambda: os.mkfifo('p'), lambda: os.chmod('f', 0o777)):\n"
        "        open('f', 'w').close()\n"
        "        try:\n"
        "            make()\n"
        "        except OSError:\n"
        "            refused += 1\n"
        "    return refused\n"
    )
    five = {"prompt": "def f():\n", "test": "def check(candidate):\n    assert candidate() == 5\n",
            "entry_point": "f"}
    result = box.check(five, attempts)
    assert result.passed, result.detail


@pytest.mark.parametrize("completion, detail", [
    ("    return a +\n", "does not compile: SyntaxError"),
    ("    return a + b\x00\n", "does not compile"),
    ("    return a + b\n" + "#" * (1 << 20), "over the sandbox's limit"),
])
def test_programs_that_cannot_compile_fail_without_running(box, completion, detail):
    result = box.check(ADD, completion)
    assert result.status == "failed" and detail in result.detail
    assert_healthy(box)


def test_closing_collects_the_cpu_time_not_reported_yet():
    sandbox = Sandbox(workers=1, isolation="subprocess")
    with sandbox:
        assert sandbox.check(ADD, "    return a + b\n").passed
        after_check = sandbox.cpu_seconds
    # The candidate's exit and the spawner's share arrive with the next check,
    # or when the sandbox closes.
    assert sandbox.cpu_seconds > after_check


def test_check_many_survives_a_worker_that_dies_mid_batch():
    import signal
    import threading

    sleeper = "    import time\n    time.sleep(1.0)\n    return a + b\n"
    items = [(ADD, sleeper)] + [(ADD, "    return a + b\n")] * 6
    with Sandbox(workers=1, timeout=3.0, isolation="subprocess") as sandbox:
        victim = sandbox._all[0].proc.pid
        killer = threading.Timer(0.4, lambda: os.kill(victim, signal.SIGKILL))
        killer.start()
        results = sandbox.check_many(items)
        killer.join()
        assert [r.status for r in results] == ["error"] + ["passed"] * 6
        assert sandbox.restarts == 1


def test_check_many_raises_rather_than_drop_results_when_a_worker_cannot_be_replaced():
    with Sandbox(workers=1, isolation="subprocess") as sandbox:
        sandbox._argv = ["/nonexistent/python"]  # a replacement cannot start
        items = [(ADD, "    import os\n    os._exit(1)\n")] + [(ADD, "    return a + b\n")] * 3
        # The candidate's exit only ends the check; kill the server to need a replacement.
        victim = sandbox._all[0].proc.pid
        os.kill(victim, 9)
        with pytest.raises((SandboxError, OSError)):
            sandbox.check_many(items)


def process_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return None


def test_a_dead_spawner_costs_one_check_not_the_worker():
    import signal

    with Sandbox(workers=1, isolation="subprocess") as sandbox:
        assert sandbox.check(ADD, "    return a + b\n").passed
        server = sandbox._all[0].proc.pid
        spawners = [pid for pid in sandbox_workers()
                    if parent_of(pid) == server and process_name(pid) == "llm-sbx-spawner"]
        assert len(spawners) == 1
        os.kill(spawners[0], signal.SIGKILL)
        time.sleep(0.1)
        assert sandbox.check(ADD, "    return a + b\n").status == "error"
        assert sandbox.check(ADD, "    return a + b\n").passed


# -- the seccomp program, run by a small classic-BPF interpreter ---------------

def run_filter(program, arch, nr, args=(0,) * 6):
    """Evaluate a seccomp classic-BPF program on one system call."""
    import struct

    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    accumulator, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            accumulator = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x15:  # BPF_JMP | BPF_JEQ | BPF_K
            pc += 1 + (jt if accumulator == k else jf)
        elif code == 0x35:  # BPF_JMP | BPF_JGE | BPF_K
            pc += 1 + (jt if accumulator >= k else jf)
        elif code == 0x45:  # BPF_JMP | BPF_JSET | BPF_K
            pc += 1 + (jt if accumulator & k else jf)
        elif code == 0x05:  # BPF_JMP | BPF_JA
            pc += 1 + k
        elif code == 0x06:  # BPF_RET | BPF_K
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


# What the red team reached through ctypes, and the rest of what no check needs.
MUST_REFUSE = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "add_key", "keyctl", "request_key",
    "shmget", "shmat", "shmctl", "semget", "msgget", "memfd_create", "unshare", "setns", "mount",
    "pidfd_getfd", "pidfd_open", "ptrace", "process_vm_readv", "process_vm_writev", "kill", "tkill",
    "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal", "execve", "execveat",
    "connect", "bind", "prctl", "personality", "flock", "mkdirat", "symlinkat", "linkat", "mknodat",
    "fchmod", "fchmodat", "fchmodat2", "fchownat", "fchown",
)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_program_allows_only_its_list(machine):
    import errno

    from pytest_llm_energy import _sandbox_seccomp as seccomp

    arch, numbers = seccomp.SYSCALLS[machine]
    program = seccomp.program(arch, numbers)
    allow = 0x7FFF0000

    def verdict(name_or_nr, args=(0,) * 6, on_arch=arch):
        nr = numbers[name_or_nr] if isinstance(name_or_nr, str) else name_or_nr
        result = run_filter(program, on_arch, nr, args)
        return "allow" if result == allow else errno.errorcode[result & 0xFFFF]

    for name in ("clone", "clone3") + (("fork", "vfork") if machine == "x86_64" else ()):
        assert verdict(name) == "EAGAIN", name
    for family in (1, 2, 10, 16, 40):  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_VSOCK
        assert verdict("socket", (family,) + (0,) * 5) == "EACCES"
    for name in MUST_REFUSE:
        if name in numbers:
            assert verdict(name) == "EPERM", name
    allowed = [name for name in seccomp.ALLOWED if name in numbers]
    assert len(allowed) > 40
    for name in allowed:
        assert verdict(name) == "allow", name
    # Every number not on the list is refused, including ones no table names.
    listed = {numbers[name] for name in allowed} | {numbers["fcntl"], numbers["ioctl"], numbers["prlimit64"]}
    for nr in range(0, 600):
        if nr not in listed:
            assert verdict(nr) != "allow", nr
    # fcntl: descriptor flags yes; owner, signal, async I/O and locks no.
    fcntl = lambda cmd, arg=0: verdict("fcntl", (3, cmd, arg, 0, 0, 0))  # noqa: E731
    for cmd in (0, 1, 2, 3, 1030):
        assert fcntl(cmd) == "allow"
    assert fcntl(4, 0o4000) == "allow"  # F_SETFL O_NONBLOCK
    assert fcntl(4, 0o20000) == "EPERM" and fcntl(4, 0o24000) == "EPERM"  # O_ASYNC
    for cmd in (8, 10, 15, 5, 6, 7, 1024, 37, 38):  # F_SETOWN, F_SETSIG, F_SETOWN_EX, locks, leases, OFD locks
        assert fcntl(cmd) == "EPERM", cmd
    # ioctl: terminal queries only (TIOCSTI, FIOASYNC refused).
    assert verdict("ioctl", (0, 0x5401, 0, 0, 0, 0)) == "allow"
    assert verdict("ioctl", (0, 0x5412, 0, 0, 0, 0)) == "EPERM"
    assert verdict("ioctl", (0, 0x5452, 0, 0, 0, 0)) == "EPERM"
    # prlimit64 on itself only.
    assert verdict("prlimit64", (0, 7, 0, 0, 0, 0)) == "allow"
    assert verdict("prlimit64", (1, 7, 0, 0, 0, 0)) == "EPERM"
    assert verdict(0, on_arch=0x40000003) == "ENOSYS"  # another ABI (i386)
    # A binary search: no call takes more than a few dozen instructions (the
    # kernel runs the filter for every call number when it is installed).
    assert len(program) < 400
    if machine == "x86_64":
        assert verdict(0x40000000 | numbers["fork"]) == "ENOSYS"  # x32 numbering
        assert verdict(0x40000000) == "ENOSYS"


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_spawner_filter_plus_candidate_filter_is_exactly_the_allow_list(machine):
    """The kernel applies both filters; the stricter verdict wins (for two errnos, the later filter's)."""
    import itertools

    from pytest_llm_energy import _sandbox_seccomp as seccomp

    arch, numbers = seccomp.SYSCALLS[machine]
    full = seccomp.program(arch, numbers)
    spawner = seccomp.program(arch, numbers, extra=seccomp.SPAWNER_EXTRA)
    candidate = seccomp.candidate_program(arch, numbers)
    assert len(candidate) < 80  # cheap to install in every candidate
    allow = 0x7FFF0000

    def combined(nr, args, on_arch=arch):
        first, second = run_filter(spawner, on_arch, nr, args), run_filter(candidate, on_arch, nr, args)
        return second if second != allow else first

    argument_sets = [(0,) * 6] + [(3, cmd, arg, 0, 0, 0) for cmd, arg in itertools.product(
        (0, 1, 3, 4, 8, 10, 0x5401, 0x5412), (0, 0o20000))] + [(1, 7, 0, 0, 0, 0), (2, 1, 0, 0, 0, 0)]
    for nr in list(range(0, 600)) + [0x40000000 | 57]:
        for args in argument_sets:
            assert combined(nr, args) == run_filter(full, arch, nr, args), (nr, args)
    assert combined(0, (0,) * 6, on_arch=0x40000003) == run_filter(full, 0x40000003, 0, (0,) * 6)
    # And the spawner itself may do what it must.
    for name in seccomp.SPAWNER_EXTRA:
        if name in numbers:
            assert run_filter(spawner, arch, numbers[name], (0,) * 6) == allow, name


def test_seccomp_tables_match_the_kernel_headers_where_they_are_installed():
    import re

    from pytest_llm_energy import _sandbox_seccomp as seccomp

    headers = {"x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "aarch64": "/usr/include/asm-generic/unistd.h"}
    checked = 0
    for machine, header in headers.items():
        if not os.path.exists(header):
            continue
        known = {name: int(nr) for name, nr in re.findall(r"#define __NR(?:3264)?_(\w+) (\d+)", open(header).read())}
        known.setdefault("newfstatat", known.get("fstatat"))
        for name, nr in seccomp.SYSCALLS[machine][1].items():
            if name in known and known[name] is not None:
                assert known[name] == nr, (machine, name)
                checked += 1
    if not checked:
        pytest.skip("no kernel headers here")


# -- construction ----------------------------------------------------------------

def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        Sandbox(workers=0)
    with pytest.raises(ValueError):
        Sandbox(timeout=0)
    with pytest.raises(ValueError):
        Sandbox(isolation="docker")


def test_check_outside_the_context_manager_says_what_to_do():
    with pytest.raises(SandboxError, match="context manager"):
        Sandbox().check(ADD, "    return a + b\n")


def test_subprocess_mode_reports_reduced_isolation():
    with Sandbox(workers=1, isolation="subprocess") as sandbox:
        assert sandbox.isolation == "subprocess"
        assert "no separate filesystem, network or pid namespace" in sandbox.isolation_note
        assert sandbox.describe()["isolation"] == "subprocess"


def test_workers_stop_with_the_sandbox():
    with Sandbox(workers=2, isolation="subprocess") as sandbox:
        pids = [w.proc.pid for w in sandbox._all]
        assert all(pid in sandbox_workers() for pid in pids)
    deadline = time.monotonic() + 5
    while any(pid in sandbox_workers() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid in sandbox_workers() for pid in pids)
