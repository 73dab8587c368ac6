#!/usr/bin/env python3
"""Vault benchmark: import a generated ChatGPT export, then list ACUs.

    .venv/bin/python scripts/bench_vault.py [--conversations 10000] [--messages 20]

Generates a ChatGPT-format `conversations.json` (by default 10,000 conversations of 20 messages:
200,000 messages, every answer with a code block, so about 200,000 ACUs), imports it with the
real CLI (`vivim-node import`, straight to the data directory, as a user would with no node
running) and prints messages/s, ACUs/s, ops/s and database bytes per op, next to this machine's
Ed25519 signing rate measured in the same run (each ACU costs one signature, its create op's,
which is also its author signature: store/VAULT_DESIGN.md section 4). Then it times the first
page of `acus list` (50 newest ACUs) in process, median of 20. Targets: >= 5,000 ACUs/s end to
end; first page < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nacl.signing

from node import vault_ops
from node.local_cluster import init_data_dir, node_command
from store.database import open_database

TARGET_ACUS_PER_S = 5000
TARGET_FIRST_PAGE_MS = 100.0
LANGUAGES = ("python", "rust", "typescript", "bash", "go")


def generate_export(conversations: int, messages: int) -> list[dict[str, object]]:
    """A ChatGPT export: linear conversations of user/assistant pairs, code in every answer."""
    export = []
    base = 1_700_000_000.0
    for c in range(conversations):
        mapping: dict[str, dict[str, object]] = {
            "root": {"id": "root", "message": None, "parent": None, "children": []}
        }
        parent = "root"
        for m in range(messages):
            node_id = f"c{c}-m{m}"
            role = "user" if m % 2 == 0 else "assistant"
            if role == "user":
                text = f"Question {m // 2} of conversation {c}: how do I handle case {c * 31 + m}?"
            else:
                language = LANGUAGES[(c + m) % len(LANGUAGES)]
                text = (
                    f"Here is one way for case {c * 31 + m}. It keeps the state small.\n\n"
                    f"```{language}\nvalue_{c}_{m} = compute({c}, {m})\n"
                    f"print(value_{c}_{m})\n```\n\n"
                    "Run it and compare the output."
                )
            mapping[node_id] = {
                "id": node_id,
                "parent": parent,
                "children": [],
                "message": {
                    "id": node_id,
                    "author": {"role": role},
                    "content": {"content_type": "text", "parts": [text]},
                    "create_time": base + c * 100 + m,
                    "metadata": {"model_slug": "gpt-4o"} if role == "assistant" else {},
                },
            }
            children = mapping[parent]["children"]
            assert isinstance(children, list)
            children.append(node_id)
            parent = node_id
        export.append(
            {
                "id": f"conv-{c}",
                "title": f"Benchmark conversation {c}",
                "create_time": base + c * 100,
                "update_time": base + c * 100 + messages,
                "current_node": parent,
                "default_model_slug": "gpt-4o",
                "mapping": mapping,
            }
        )
    return export


def sign_rate(seconds: float = 1.0) -> float:
    key = nacl.signing.SigningKey.generate()
    message = b"x" * 300
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(1000):
            key.sign(message)
        count += 1000
    return count / (time.perf_counter() - started)


def database_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("vivim.db*"))


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="vivim-bench-vault-") as tmp:
        base = Path(tmp)
        print("generating the export...", file=sys.stderr)
        export = generate_export(args.conversations, args.messages)
        export_file = base / "conversations.json"
        export_file.write_text(json.dumps(export))
        del export
        data_dir = base / "node"
        init_data_dir(data_dir)
        rate = sign_rate()

        print(f"importing {export_file.stat().st_size / 1e6:.0f} MB...", file=sys.stderr)
        started = time.perf_counter()
        result = subprocess.run(
            node_command("import", str(export_file), "--data-dir", str(data_dir), "--json"),
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"import failed ({result.returncode}):\n{result.stderr[-2000:]}")
        summary = json.loads(result.stdout)

        db = open_database(data_dir / "vivim.db")
        try:
            timings = []
            for _ in range(20):
                t = time.perf_counter()
                page = vault_ops.list_acus(db, None, None, 50, None)
                timings.append((time.perf_counter() - t) * 1000)
            assert len(page["acus"]) == 50
            db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        ops = summary["ops_written"]
        figures = {
            "benchmark": "vault",
            "conversations": summary["conversations_created"],
            "messages": summary["messages_created"],
            "acus": summary["acus_created"],
            "links": summary["links_created"],
            "ops": ops,
            "import_s": round(elapsed, 2),
            "messages_per_s": round(summary["messages_created"] / elapsed),
            "acus_per_s": round(summary["acus_created"] / elapsed),
            "ops_per_s": round(ops / elapsed),
            "db_bytes_per_op": round(database_bytes(data_dir) / max(ops, 1)),
            "ed25519_signs_per_s": round(rate),
            "acus_list_first_page_ms": round(statistics.median(timings), 2),
            "targets": {"acus_per_s": TARGET_ACUS_PER_S, "first_page_ms": TARGET_FIRST_PAGE_MS},
        }
        figures["within_targets"] = (
            figures["acus_per_s"] >= TARGET_ACUS_PER_S
            and figures["acus_list_first_page_ms"] < TARGET_FIRST_PAGE_MS
        )
        print(json.dumps(figures))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=20, help="messages per conversation")
    main(parser.parse_args())
