"""What the sandbox tests share: problems, the sandbox in each isolation mode, process helpers."""

import os
import shutil
import time

import pytest

from pytest_llm_energy.sandbox import Sandbox, SandboxError

ADD = {
    "prompt": "def add(a, b):\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert abs(candidate(-1, 1)) < 1e-9\n",
    "entry_point": "add",
}
PROBE = {
    "prompt": "def probe():\n",
    "test": "def check(candidate):\n    assert candidate() == []\n",
    "entry_point": "probe",
}

MODES = ["bwrap", "subprocess"]


@pytest.fixture(scope="module", params=MODES)
def box(request):
    if request.param == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    # Installed but failing is a bug to see, unless this machine refuses
    # namespaces and says so.
    try:
        sandbox = Sandbox(workers=2, timeout=2.0, memory_mb=512, isolation=request.param)
        sandbox.start()
    except SandboxError as exc:
        if os.environ.get("LLM_ENERGY_NO_BWRAP_TESTS"):
            pytest.skip(f"bubblewrap refused here: {exc}")
        raise
    with sandbox:
        yield sandbox


def sandbox_workers():
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if b"_sandbox_worker.py" in handle.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def parent_of(pid):
    """The parent's pid, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def settled_worker_count():
    """Processes of the sandbox once none is being forked or reaped."""
    deadline = time.monotonic() + 3
    while True:
        first = len(sandbox_workers())
        time.sleep(0.05)
        second = len(sandbox_workers())
        if first == second or time.monotonic() > deadline:
            return second


def assert_healthy(box):
    result = box.check(ADD, "    return a + b\n")
    assert result.passed, result.detail


def sees_only_its_uid_files(box):
    """Reduced isolation with no Landlock: checked code reaches whatever its uid may."""
    return box.isolation == "subprocess" and not box._all[0].landlock
