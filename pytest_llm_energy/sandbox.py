"""Isolated, fast execution of generated code against a task's tests.

``Sandbox`` keeps warm fork servers (``_sandbox_worker.py``), each inside
bubblewrap when it is installed and usable: read-only root, private ``/tmp``,
no network, its own pid namespace, dies with its parent. A check then costs one
``fork()`` made ahead of time, not an interpreter start. Where bubblewrap is missing or
refused, the servers run as plain subprocesses with the same per-check limits
and seccomp filter, and :attr:`Sandbox.isolation_note` says what is lost.

Generated code never runs in the calling (pytest) process.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import select
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from ._sandbox_files import remove_tree

WORKER_SCRIPT = Path(__file__).with_name("_sandbox_worker.py")
STATUSES = ("passed", "failed", "timeout", "error")
# Extra seconds the client waits beyond a check's own timeout before it
# declares the worker hung and replaces it.
CLIENT_GRACE_S = 5.0
# Jobs check_many keeps queued at each worker.
PIPELINE_DEPTH = 2
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    status: str
    detail: str
    seconds: float
    cpu_seconds: float = 0.0


class SandboxError(Exception):
    """The sandbox could not start at all."""


def _world_reachable(path: Path) -> bool:
    """True when an unprivileged user can reach and read ``path``."""
    current = Path("/")
    for part in path.parts[1:]:
        current = current / part
        try:
            mode = current.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def _interpreter() -> tuple[str, Path]:
    executable = os.path.realpath(sys.executable)
    prefix = Path(os.path.realpath(sys.base_prefix))
    return executable, prefix


# What the interpreter needs from the host inside bubblewrap, bound read-only;
# nothing else of the host is there (no home, no checkout, no dataset, no
# sockets or FIFOs). Top-level links (merged /usr) are recreated as links.
_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")


def _package_dirs(prefix: Path) -> list[Path]:
    """Where pip installs packages for this interpreter, outside a virtual environment."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [prefix / "lib" / version / "site-packages", Path("/usr/local/lib") / version / "dist-packages",
                  Path("/usr/lib/python3/dist-packages"), Path("/usr/lib") / version / "site-packages",
                  Path("/usr/local/lib") / version / "site-packages"]
    return [path for path in candidates if path.is_dir() and not path.is_symlink()]


def _bwrap_command(as_root: bool, tmp_bytes: int) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError("bubblewrap (bwrap) is not installed; apt-get install bubblewrap")
    command = [bwrap]
    bound: list[Path] = []
    for name in _SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            command += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            command += ["--ro-bind", name, name]
            bound.append(path)
    for name in _SYSTEM_FILES:
        command += ["--ro-bind-try", name, name]
    command += ["--dir", "/dev"]
    for name in _DEVICES:
        command += ["--dev-bind-try", name, name]
    command += [
        "--proc", "/proc",
        "--size", str(tmp_bytes), "--perms", "0755", "--tmpfs", "/tmp",
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--chdir", "/tmp",
    ]
    executable, prefix = _interpreter()
    # The interpreter and this package's directory (the worker and its
    # modules), each with the directories leading to it made traversable.
    for path in (prefix, Path(executable), WORKER_SCRIPT.parent.resolve()):
        if any(path == b or b in path.parents for b in bound):
            continue
        for directory in reversed(path.parents):
            if directory != Path("/") and not any(directory == b or b in directory.parents for b in bound):
                command += ["--perms", "0755", "--dir", str(directory)]
        command += ["--ro-bind", str(path), str(path)]
        bound.append(path)
    # Installed packages (the dataset among them) are not the interpreter's:
    # hide them under empty file systems.
    for packages in _package_dirs(prefix):
        command += ["--tmpfs", str(packages)]
    if not as_root:
        command.append("--unshare-user")
    else:
        command += ["--cap-drop", "ALL"]
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_KILL", "CAP_FOWNER", "CAP_DAC_OVERRIDE"):
            command += ["--cap-add", cap]
    return command


class _Worker:
    """One fork server process and its framed JSON pipe."""

    def __init__(self, argv: Sequence[str], cwd: Optional[str]) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
        ready = self._read(START_TIMEOUT_S)
        if ready is None or not ready.get("ready"):
            stderr = b""
            try:
                self.proc.kill()
                _, stderr = self.proc.communicate(timeout=5)
            except (OSError, subprocess.SubprocessError):
                pass
            first = (stderr or b"").decode("utf-8", "replace").strip().splitlines()
            raise SandboxError(first[0] if first else "the sandbox worker did not start")
        self.seccomp = bool(ready.get("seccomp"))
        self.landlock = int(ready.get("landlock") or 0)
        self.drop_to_nobody = bool(ready.get("drop_to_nobody"))
        self.capless_root = bool(ready.get("capless_root"))
        # The worker's stderr is no longer read: send it nowhere.
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def _read(self, timeout: float) -> Optional[dict[str, Any]]:
        stdout = self.proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        data = b""
        needed = 4
        header_done = False
        while len(data) < needed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([stdout], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(stdout.fileno(), needed - len(data))
            if not chunk:
                return None
            data += chunk
            if not header_done and len(data) == 4:
                needed = 4 + struct.unpack(">I", data)[0]
                header_done = True
        return json.loads(data[4:])

    def send(self, job: Mapping[str, Any]) -> bool:
        payload = json.dumps(job).encode()
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(struct.pack(">I", len(payload)) + payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def receive(self, timeout: float) -> Optional[dict[str, Any]]:
        """The next reply; None when the worker died or hung."""
        try:
            return self._read(timeout)
        except (ValueError, OSError):
            return None

    def run(self, job: Mapping[str, Any], timeout: float) -> Optional[dict[str, Any]]:
        return self.receive(timeout) if self.send(job) else None

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Sandbox:
    """Checks completions of HumanEval-style problems in isolation.

    ``with Sandbox(workers=2, timeout=3.0, memory_mb=1024) as box:
    box.check(problem, completion)`` where ``problem`` has ``prompt``,
    ``test`` and ``entry_point``. ``isolation`` is ``auto`` (bubblewrap when
    usable), ``bwrap`` (required) or ``subprocess``.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 3.0,
        memory_mb: int = 1024,
        file_mb: int = 16,
        isolation: str = "auto",
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if memory_mb < 64:
            raise ValueError("memory_mb must be at least 64")
        if isolation not in ("auto", "bwrap", "subprocess"):
            raise ValueError("isolation must be auto, bwrap or subprocess")
        self.workers = workers
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.file_mb = file_mb
        self.requested_isolation = isolation
        self.isolation = ""
        self.isolation_note: Optional[str] = None
        self._argv: list[str] = []
        self._cwd: Optional[str] = None
        self._private_tmp: Optional[str] = None
        self._idle: "queue.Queue[_Worker]" = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._cpu_seconds = 0.0
        self.checks = 0
        self.restarts = 0

    # -- lifecycle -------------------------------------------------------------
    def __enter__(self) -> "Sandbox":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._all:
            return
        as_root = os.geteuid() == 0
        executable, prefix = _interpreter()
        notes: list[str] = []
        if self.requested_isolation in ("auto", "bwrap"):
            try:
                self._configure(bwrap=True, as_root=as_root, executable=executable, prefix=prefix)
                self._add_worker()
                self.isolation = "bwrap"
            except SandboxError as exc:
                if self.requested_isolation == "bwrap":
                    raise
                notes.append(f"bubblewrap unavailable ({exc})")
        if not self.isolation:
            self._configure(bwrap=False, as_root=as_root, executable=executable, prefix=prefix)
            self._add_worker()
            self.isolation = "subprocess"
            notes.append("no separate filesystem, network or pid namespace")
        first = self._all[0]
        if not first.seccomp:
            notes.append("no seccomp filter on this platform: system calls are not restricted")
            self._config["seccomp"] = False
        if not first.landlock:
            notes.append("no Landlock in this kernel: checked code sees the files its uid may read")
            self._config["landlock"] = False
        if first.capless_root:
            notes.append("checked code keeps uid 0 without capabilities (the interpreter is not readable by "
                         "nobody), confined by Landlock and seccomp")
        elif as_root and self.isolation == "subprocess" and not self._config["nobody_can_read_interpreter"]:
            notes.append("checked code runs as nobody, who cannot read the interpreter: "
                         "modules not loaded in advance cannot be imported")
        self.isolation_note = "; ".join(notes) if notes else None
        while len(self._all) < self.workers:
            self._add_worker()

    def _configure(self, bwrap: bool, as_root: bool, executable: str, prefix: Path) -> None:
        if bwrap:
            config = {
                "tmp": "/tmp",
                "own_pid_namespace": True,
                # bubblewrap makes the directories to the interpreter traversable.
                "nobody_can_read_interpreter": True,
            }
            launcher = _bwrap_command(as_root, tmp_bytes=max(64, 4 * self.file_mb) * 1024 * 1024)
            self._cwd = None
        else:
            # The worker makes it unlistable to candidates once it knows their uid.
            self._private_tmp = tempfile.mkdtemp(prefix="llm-energy-sandbox-")
            config = {
                "tmp": self._private_tmp,
                "own_pid_namespace": False,
                "nobody_can_read_interpreter": _world_reachable(Path(executable)) and _world_reachable(prefix),
            }
            launcher = []
            self._cwd = self._private_tmp
        config.update(as_root=as_root, memory_mb=self.memory_mb, file_mb=self.file_mb, seccomp=True, landlock=True)
        self._config = config
        self._argv = launcher + [executable, "-I", "-S", str(WORKER_SCRIPT), json.dumps(config)]

    def _add_worker(self) -> _Worker:
        worker = _Worker(self._argv, self._cwd)
        with self._lock:
            self._all.append(worker)
        self._idle.put(worker)
        return worker

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        idle = set()
        while True:
            try:
                idle.add(self._idle.get_nowait())
            except queue.Empty:
                break
        for worker in workers:
            if worker in idle:
                # A worker reports part of a check's CPU time (the candidate's
                # exit) with the next one: collect the last, so the energy
                # estimate misses none. A busy worker's pipe is not ours to use.
                reply = worker.run({"flush": True}, timeout=CLIENT_GRACE_S)
                if reply is not None:
                    with self._lock:
                        self._cpu_seconds += float(reply.get("cpu_seconds", 0.0))
            worker.close()
        self._idle = queue.Queue()
        if self._private_tmp:
            # Whatever checked code left there, removed without following
            # any link it planted, however deep.
            remove_tree(self._private_tmp)
            self._private_tmp = None

    # -- checks ----------------------------------------------------------------
    @property
    def cpu_seconds(self) -> float:
        """CPU time spent by checked code so far (it is not this process's)."""
        return self._cpu_seconds

    def check(self, problem: Mapping[str, Any], completion: str, timeout: Optional[float] = None) -> CheckResult:
        """Run prompt + completion against the problem's test; never raises for bad code."""
        job = self._job(problem, completion, timeout)
        worker = self._idle.get()
        started = time.monotonic()
        try:
            reply = worker.run(job, job["timeout"] + CLIENT_GRACE_S)
            if reply is None:
                worker = self._replace(worker)
                return self._died(started)
        finally:
            self._idle.put(worker)
        return self._result(reply)

    def check_many(self, items: Iterable[tuple[Mapping[str, Any], str]]) -> list[CheckResult]:
        """Check many (problem, completion) pairs in parallel over the workers, in order.

        Each worker gets its next job before it has finished the current one,
        so it never waits for this process between checks.
        """
        pending = collections.deque(enumerate(self._job(problem, completion, None) for problem, completion in items))
        results: list[Optional[CheckResult]] = [None] * len(pending)
        lock = threading.Lock()

        def take() -> Optional[tuple[int, dict[str, Any]]]:
            with lock:
                return pending.popleft() if pending else None

        failures: list[BaseException] = []

        def drive() -> None:
            try:
                run_jobs()
            except BaseException as exc:  # e.g. a replacement worker that cannot start
                failures.append(exc)
                with lock:
                    pending.clear()

        def run_jobs() -> None:
            worker = self._idle.get()
            in_flight: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
            try:
                while True:
                    while len(in_flight) < PIPELINE_DEPTH:
                        taken = take()
                        if taken is None:
                            break
                        in_flight.append(taken)
                        if not worker.send(taken[1]):
                            break  # dead: receive() says so below
                    if not in_flight:
                        return
                    started = time.monotonic()
                    index, job = in_flight.popleft()
                    reply = worker.receive(job["timeout"] + CLIENT_GRACE_S)
                    if reply is None:
                        worker = self._replace(worker)
                        results[index] = self._died(started)
                        # The jobs queued behind it never started: run them again.
                        with lock:
                            pending.extendleft(reversed(in_flight))
                        in_flight.clear()
                    else:
                        results[index] = self._result(reply)
            finally:
                self._idle.put(worker)

        threads = [threading.Thread(target=drive, daemon=True) for _ in range(min(self.workers, len(pending)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value]

    # -- helpers of check and check_many -------------------------------------
    def _job(self, problem: Mapping[str, Any], completion: str, timeout: Optional[float]) -> dict[str, Any]:
        if not self._all:
            raise SandboxError("the sandbox is not started; use it as a context manager")
        return {
            "prompt": problem["prompt"],
            "completion": completion,
            "test": problem["test"],
            "entry_point": problem["entry_point"],
            "timeout": self.timeout if timeout is None else timeout,
        }

    def _replace(self, worker: _Worker) -> _Worker:
        """A worker that died or hung is killed and replaced, so later checks are unaffected."""
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            self.restarts += 1
        try:
            worker.proc.kill()
        except OSError:
            pass
        worker.close()
        replacement = _Worker(self._argv, self._cwd)
        with self._lock:
            self._all.append(replacement)
        return replacement

    @staticmethod
    def _died(started: float) -> CheckResult:
        return CheckResult(False, "error", "the sandbox worker died during the check and was replaced",
                           time.monotonic() - started)

    def _result(self, reply: Mapping[str, Any]) -> CheckResult:
        cpu = float(reply.get("cpu_seconds", 0.0))
        with self._lock:
            self._cpu_seconds += cpu
            self.checks += 1
        status = reply.get("status", "error")
        if status not in STATUSES:
            status = "error"
        return CheckResult(status == "passed", status, str(reply.get("detail", "")), float(reply["seconds"]), cpu)

    def describe(self) -> dict[str, Any]:
        return {
            "isolation": self.isolation,
            "note": self.isolation_note,
            "workers": self.workers,
            "timeout_s": self.timeout,
            "memory_mb": self.memory_mb,
        }


__all__ = ["CheckResult", "Sandbox", "SandboxError"]
