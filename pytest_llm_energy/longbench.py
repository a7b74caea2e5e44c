"""``python -m pytest_llm_energy.longbench build``: lcc-format records from your own code.

Each record's context is a source file up to a chosen line and its answer is
the next non-trivial line, so a team can measure code completion on its own
repository and CI needs no download. The same repository, options and seed
always give the same records.

    python -m pytest_llm_energy.longbench build --repo PATH --out FILE
        [--language python] [--count N] [--min-context-tokens N] [--seed S]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from typing import Any, Optional, Sequence

EXTENSIONS = {"python": (".py",), "java": (".java",), "csharp": (".cs",)}
COMMENT_PREFIXES = {"python": ("#",), "java": ("//", "/*", "*"), "csharp": ("//", "/*", "*")}
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".tox", "build", "dist"}
MAX_FILE_BYTES = 2_000_000


def context_tokens(text: str) -> int:
    """LongBench's ``length`` field: words, whitespace-separated."""
    return len(text.split())


def is_trivial(line: str, language: str) -> bool:
    """Blank lines, comments and lone brackets say nothing about a model's completion."""
    stripped = line.strip()
    if len(stripped) < 4:
        return True
    if stripped.startswith(COMMENT_PREFIXES[language]):
        return True
    return all(ch in "{}()[];:,." for ch in stripped)


def source_files(repo: str, language: str) -> list[str]:
    found = []
    for directory, subdirs, files in os.walk(repo):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(EXTENSIONS[language]):
                path = os.path.join(directory, name)
                if os.path.getsize(path) <= MAX_FILE_BYTES:
                    found.append(path)
    return found


def build_records(repo: str, language: str = "python", count: int = 50, min_context_tokens: int = 500,
                  seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``count`` records, each from a different (file, line), chosen with ``seed``."""
    rng = random.Random(seed)
    candidates: list[tuple[str, int]] = []
    texts: dict[str, list[str]] = {}
    for path in source_files(repo, language):
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines(keepends=True)
        except (UnicodeDecodeError, OSError):
            continue
        texts[path] = lines
        words = 0
        for index, line in enumerate(lines):
            if words >= min_context_tokens and not is_trivial(line, language):
                candidates.append((path, index))
            words += len(line.split())
    rng.shuffle(candidates)
    records = []
    used_files: set[str] = set()
    # One record per file first, for variety; then more from the same files.
    for round_ in (0, 1):
        for path, index in candidates:
            if len(records) >= count:
                break
            if round_ == 0 and path in used_files:
                continue
            if round_ == 1 and any(r["_path"] == path and r["_line"] == index for r in records):
                continue
            lines = texts[path]
            context = "".join(lines[:index])
            relative = os.path.relpath(path, repo)
            records.append({
                "input": "",
                "context": context,
                "answers": [lines[index].rstrip("\n")],
                "length": context_tokens(context),
                "dataset": "lcc",
                "language": language,
                "all_classes": None,
                "_id": hashlib.sha256(f"{relative}:{index}".encode()).hexdigest()[:48],
                "_path": path,
                "_line": index,
            })
            used_files.add(path)
    for record in records:
        record.pop("_path")
        record.pop("_line")
    return records


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_llm_energy.longbench",
                                     description="LongBench helpers for pytest-llm-energy")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="turn a local code base into lcc-format records")
    build.add_argument("--repo", required=True, help="root of the code base")
    build.add_argument("--out", required=True, help="JSONL file to write (e.g. DIR/lcc.jsonl)")
    build.add_argument("--language", choices=sorted(EXTENSIONS), default="python")
    build.add_argument("--count", type=int, default=50, help="records to write (default: 50)")
    build.add_argument("--min-context-tokens", type=int, default=500,
                       help="least context per record, in whitespace-separated words (default: 500)")
    build.add_argument("--seed", type=int, default=0, help="chooses the records (default: 0)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.repo):
        parser.error(f"--repo {args.repo}: no such directory")
    if args.count < 1:
        parser.error("--count must be at least 1")
    records = build_records(args.repo, args.language, args.count, args.min_context_tokens, args.seed)
    if not records:
        print(f"no {args.language} file in {args.repo} has {args.min_context_tokens} words of context before "
              "a non-trivial line; lower --min-context-tokens", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    print(f"wrote {len(records)} records to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
