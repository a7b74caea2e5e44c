"""The model server a run starts for itself (``--energy-serve="COMMAND"``), and its CPU time.

The server runs as a child in a process group of its own, its output in a log
file. It is ready when ``/health`` (or ``/v1/models``) answers 200, and is
stopped at the end of the session, also when the run is interrupted: SIGTERM
to the group, SIGKILL after a grace period. A server that exits or never gets
ready is one usage error carrying the last lines of its output.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

DEFAULT_READY_TIMEOUT_S = 300.0
STOP_GRACE_S = 10.0
POLL_S = 0.25
TAIL_LINES = 5


class ServeError(Exception):
    """The server could not be started; one line, with the end of its output."""


class ServerProcess:
    def __init__(self, command: str, base_url: str, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise ServeError(f"--energy-serve: cannot split the command line: {exc}") from None
        if not self.argv:
            raise ServeError("--energy-serve: the command is empty")
        self.command = command
        self.root = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
        self.ready_timeout_s = ready_timeout_s
        self.clock = clock
        self.process: Optional[subprocess.Popen] = None
        self.log_path: Optional[Path] = None
        self._log = None

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        handle, name = tempfile.mkstemp(prefix="llm-energy-server-", suffix=".log")
        self.log_path = Path(name)
        self._log = os.fdopen(handle, "wb")
        try:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise ServeError(f"--energy-serve: cannot start {self.argv[0]!r}: {exc.strerror or exc}") from None
        atexit.register(self.stop)  # a run that dies before pytest's own cleanup
        deadline = self.clock() + self.ready_timeout_s
        while True:
            status = self.process.poll()
            if status is not None:
                raise ServeError(f"--energy-serve: the server exited with status {status} before it was ready; "
                                 f"its last output: {self.tail()}")
            if self._answers():
                return
            if self.clock() >= deadline:
                last = self.tail()  # before stop(), which removes the log
                self.stop()
                raise ServeError(f"--energy-serve: the server did not answer {self.root}/health within "
                                 f"{self.ready_timeout_s:g} s (--energy-serve-timeout); its last output: {last}")
            time.sleep(POLL_S)

    def _answers(self) -> bool:
        for path in ("/health", "/v1/models"):
            try:
                with urllib.request.urlopen(self.root + path, timeout=2) as response:
                    if response.status == 200:
                        return True
            except urllib.error.HTTPError:
                continue
            except (OSError, ValueError):
                return False
        return False

    def tail(self, lines: int = TAIL_LINES) -> str:
        if self._log is not None and not self._log.closed:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            text = ""
        last = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(last) if last else "(nothing)"

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after the grace period; idempotent."""
        process = self.process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        if process is not None:
            # Whatever the group left behind (a worker that ignored SIGTERM).
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log is not None and not self._log.closed:
            self._log.close()
        if self.log_path is not None:
            try:
                self.log_path.unlink()
            except OSError:
                pass
            self.log_path = None


class ProcessTreeCpu:
    """Cumulative CPU seconds of a process and all its descendants, read from ``/proc``.

    Each process counts its own ``utime + stime`` (not its children's
    ``cutime``, which would count a waited-for child twice); the last value
    seen of every process is kept, so one that exits between two reads keeps
    what it had spent by the first and the total never goes back.
    """

    def __init__(self, pid: int, proc: str = "/proc") -> None:
        self.pid = pid
        self.proc = proc
        self._seen: dict[int, float] = {}
        self._tick = os.sysconf("SC_CLK_TCK")

    def _stat(self, pid: int) -> Optional[tuple[int, float]]:
        try:
            with open(f"{self.proc}/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # After the name, counting from state at 0: ppid is 1, utime 11, stime 12.
        parent = int(fields[1])
        seconds = (int(fields[11]) + int(fields[12])) / self._tick
        return parent, seconds

    def __call__(self) -> float:
        parents: dict[int, int] = {}
        times: dict[int, float] = {}
        try:
            entries = [int(e) for e in os.listdir(self.proc) if e.isdigit()]
        except OSError:
            entries = []
        for pid in entries:
            stat = self._stat(pid)
            if stat is not None:
                parents[pid], times[pid] = stat
        tree = {self.pid} if self.pid in times else set()
        grew = True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        for pid in tree:
            self._seen[pid] = max(self._seen.get(pid, 0.0), times[pid])
        return sum(self._seen.values())
