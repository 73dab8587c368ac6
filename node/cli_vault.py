"""The vault commands of the CLI: import, conversations, acus, acu, verify.

Each goes through the running node's API when a node runs on the data directory, else straight to
the database under the run lock (node/vault_client.py); `--json` prints what the API returns.
"""

from __future__ import annotations

import argparse
import gc
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.progress import Progress

# The CLI imports this module for every command, `run` included, whose start-up must stay short:
# the vault machinery (node.vault_client, protocols.importers, starlette) is imported on use.
FORMATS = ("chatgpt", "vivim")  # protocols.importers.FORMATS; a test checks they agree

# Conversations per import call: one transaction each, whose commit (an fsync, and a rewrite of
# the pages of indexes keyed by random content ids) dominates small batches. Straight to the
# database 1000 amortizes it (measured +27% over 100); through the API a call is also a request
# the node serves while doing other work, so 100 keeps it short.
IMPORT_BATCH = {"direct": 1000, "api": 100}
# Through the API a batch is also cut by size, well under the API's body limit (32 MiB).
IMPORT_BATCH_BYTES = 8 * 1024 * 1024

COUNTS = (
    ("conversations", "conversations_created", "conversations_skipped"),
    ("messages", "messages_created", "messages_skipped"),
    ("ACUs", "acus_created", "acus_skipped"),
    ("links", "links_created", "links_skipped"),
)


class ImportFileError(NodeError):
    """The file to import cannot be read as an export."""


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    imp = commands.add_parser(
        "import",
        parents=parents,
        help="import conversations from an export file",
        description="Import a ChatGPT data export (conversations.json) or a vivim JSON file "
        '({"title", "provider", "model", "messages": [{"role", "content", "timestamp"}]}, or a '
        "list of them). Importing the same file again creates nothing new. Exit status 1 if any "
        "conversation was malformed (the others are imported).",
    )
    imp.add_argument("file", type=Path, metavar="FILE")
    imp.add_argument(
        "--format", choices=FORMATS, help="the file's format (default: detected from its shape)"
    )

    conversations = commands.add_parser(
        "conversations", parents=parents, help="list or show conversations"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = conversations.add_parser("list", parents=parents, help="newest first")
    _page_flags(listing)
    show = conversations.add_parser("show", parents=parents, help="one conversation")
    show.add_argument("id", metavar="ID")

    acus = commands.add_parser("acus", parents=parents, help="list ACUs").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    acus_list = acus.add_parser("list", parents=parents, help="newest first")
    acus_list.add_argument("--conversation", metavar="ID", help="only this conversation's")
    acus_list.add_argument("--type", metavar="T", help="only this type (qa, code, text)")
    acus_list.add_argument(
        "--received", action="store_true", help="the ACUs friends shared with you instead"
    )
    _page_flags(acus_list)

    acu = commands.add_parser(
        "acu", parents=parents, help="show, trace or edit one ACU"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    acu.add_parser("show", parents=parents, help="one ACU and its links").add_argument("id")
    acu.add_parser(
        "history", parents=parents, help="every version of an ACU (follows version_of)"
    ).add_argument("id")
    edit = acu.add_parser(
        "edit",
        parents=parents,
        help="make a new version of an ACU (ACUs are immutable: the old one stays)",
    )
    edit.add_argument("id")
    edit.add_argument("--content", required=True, metavar="TEXT", help="the new content")

    commands.add_parser(
        "verify",
        parents=parents,
        help="re-verify the whole op log and the tables built from it",
        description="Check every op's signature, every device's hash chain and sequence, and "
        "replay the log to compare with the stored tables. Exit status 1 if anything is wrong.",
    )


def _page_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=50, help="items per page (default 50)")
    parser.add_argument("--cursor", help="continue after a previous page (its next_cursor)")


COMMANDS = ("import", "conversations", "acus", "acu", "verify")


def run(args: argparse.Namespace, data_dir: Path) -> int:
    from node.vault_client import open_vault_client

    with open_vault_client(data_dir) as client:
        if args.command == "import":
            return _import(client, args)
        handler = HANDLERS[(args.command, args.action) if args.command != "verify" else "verify"]
        return handler(client, args)


def _print(args: argparse.Namespace, value: Any, text: Callable[[Any], None]) -> None:
    if args.json:
        print(json.dumps(value, indent=2))
    else:
        text(value)


def _load(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return json.load(f)
    except OSError as err:
        raise ImportFileError(f"cannot read {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ImportFileError(f"{path} is not UTF-8 text: {err}") from err
    except json.JSONDecodeError as err:
        raise ImportFileError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from err


def _import(client: Any, args: argparse.Namespace) -> int:
    from protocols.importers import detect_format

    data = _load(args.file)
    export_format = args.format or detect_format(data)
    if isinstance(data, dict) and export_format == "vivim":
        data = [data]
    if not isinstance(data, list):
        raise ImportFileError(
            f"{args.file}: expected a list of conversations at the top level"
            + (" (a ChatGPT export is a list)" if export_format == "chatgpt" else "")
        )
    totals: dict[str, int] = {}
    problems: list[dict[str, Any]] = []
    progress = Progress(len(data), f"importing {args.file.name}")
    # The parsed file is a few million objects that live to the end: keep the garbage collector
    # from scanning them again on every collection.
    gc.freeze()
    for start, end in _batches(data, IMPORT_BATCH[client.mode], by_size=client.mode == "api"):
        if end == start + 1 and client.mode == "api" and _too_big(data[start]):
            problems.append(_too_big_problem(start))
            continue
        result = client.call(
            "import_items",
            export_format=export_format,
            items=data[start:end],
            first_position=start,
        )
        problems.extend(result.pop("problems"))
        for key, value in result.items():
            totals[key] = totals.get(key, 0) + value
        progress.update(end, f"{totals.get('acus_created', 0)} new ACUs")
    progress.finish()
    summary = {"file": str(args.file), "format": export_format, **totals, "problems": problems}
    _print(args, summary, _print_import_summary)
    return 1 if problems else 0


def _batches(items: list[Any], count: int, *, by_size: bool) -> Iterator[tuple[int, int]]:
    """(start, end) of each batch: `count` items, and when `by_size` at most
    IMPORT_BATCH_BYTES of JSON (a single larger item is a batch of its own)."""
    start, size = 0, 0
    for position, item in enumerate(items):
        item_size = len(json.dumps(item)) if by_size else 0
        full = position - start >= count or size + item_size > IMPORT_BATCH_BYTES
        if position > start and full:
            yield start, position
            start, size = position, 0
        size += item_size
    if start < len(items):
        yield start, len(items)


def _too_big(item: Any) -> bool:
    from node.vault_api import MAX_BODY_BYTES

    return len(json.dumps(item)) > MAX_BODY_BYTES // 2


def _too_big_problem(position: int) -> dict[str, Any]:
    return {
        "position": position,
        "source_id": None,
        "path": f"conversations[{position}]",
        "reason": "too large to send to the running node; stop the node and import again "
        "(without a node the import reads the file directly)",
    }


def _print_import_summary(summary: dict[str, Any]) -> None:
    print(f"imported {summary['file']} ({summary['format']} format)")
    for label, created, skipped in COUNTS:
        print(
            f"  {label:14} {summary.get(created, 0):>8} new  "
            f"{summary.get(skipped, 0):>8} already in the vault"
        )
    print(f"  {'ops written':14} {summary.get('ops_written', 0):>8}")
    if summary.get("messages_dropped"):
        print(f"  {summary['messages_dropped']} empty or hidden messages were left out")
    problems = summary["problems"]
    if problems:
        print(f"  {len(problems)} conversation(s) skipped as malformed:")
        for problem in problems:
            print(f"    {problem['path']}: {problem['reason']}")


def _conversations_list(client: Any, args: argparse.Namespace) -> int:
    page = client.call("list_conversations", limit=args.limit, cursor=args.cursor)

    def text(page: dict[str, Any]) -> None:
        for c in page["conversations"]:
            print(f"{c['id']}  {c['provider']:8} {c['title']}")
        _more(page)

    _print(args, page, text)
    return 0


def _conversations_show(client: Any, args: argparse.Namespace) -> int:
    detail = client.call("get_conversation", conversation_id=args.id)

    def text(c: dict[str, Any]) -> None:
        print(f"{c['title']}  ({c['provider']}, {c['model'] or 'model unknown'})")
        print(f"id: {c['id']}")
        for m in detail["messages"]:
            branch = "" if m["branch"] == "main" else " [alternate]"
            print(f"\n[{m['index']}] {m['role']}{branch}:\n{m['content']}")

    _print(args, detail, text)
    return 0


def _acus_list(client: Any, args: argparse.Namespace) -> int:
    if args.received:
        from node.cli_share import print_received

        return print_received(client, args)
    page = client.call(
        "list_acus",
        conversation_id=args.conversation,
        acu_type=args.type,
        limit=args.limit,
        cursor=args.cursor,
    )

    def text(page: dict[str, Any]) -> None:
        for a in page["acus"]:
            first_line = a["content"].strip().splitlines()[0] if a["content"].strip() else ""
            print(f"{a['id']}  {a['type']:5} {first_line[:70]}")
        _more(page)

    _print(args, page, text)
    return 0


def _acu_show(client: Any, args: argparse.Namespace) -> int:
    acu = client.call("get_acu", acu_id=args.id)

    def text(a: dict[str, Any]) -> None:
        print(f"id:       {a['id']}")
        language = f", {a['language']}" if a["language"] else ""
        print(f"type:     {a['type']} ({a['category']}{language})")
        print(f"sharing:  {a['sharing_level']}")
        print(f"author:   {a['author']}")
        for link in a["links"]:
            print(f"link:     {link['source']} {link['relation']} {link['target']}")
        print(f"\n{a['content']}")

    _print(args, acu, text)
    return 0


def _acu_history(client: Any, args: argparse.Namespace) -> int:
    history = client.call("acu_history", acu_id=args.id)

    def text(h: dict[str, Any]) -> None:
        for n, version in enumerate(h["versions"], 1):
            print(f"--- version {n}: {version['id']}\n{version['content']}\n")

    _print(args, history, text)
    return 0


def _acu_edit(client: Any, args: argparse.Namespace) -> int:
    result = client.call("edit_acu", acu_id=args.id, content=args.content)
    _print(args, result, lambda r: print(f"new version {r['id']} (version_of {r['version_of']})"))
    return 0


def _verify(client: Any, args: argparse.Namespace) -> int:
    report = client.call("verify")

    def text(r: dict[str, Any]) -> None:
        if r["ok"]:
            print("the vault is consistent: every op verifies and the tables match the log")
        for p in r["problems"]:
            where = " ".join(
                f"{key}={p[key]}"
                for key in ("entity_type", "entity_id", "device", "op_id")
                if p.get(key)
            )
            print(f"problem: {p.get('kind')}: {p.get('detail')} ({where})")
        if not r["ok"]:
            print(f"{len(r['problems'])} problem(s) found")

    _print(args, report, text)
    return 0 if report["ok"] else 1


def _more(page: dict[str, Any]) -> None:
    if page.get("next_cursor"):
        print(f"(more: --cursor {page['next_cursor']})")


HANDLERS: dict[Any, Callable[[Any, argparse.Namespace], int]] = {
    ("conversations", "list"): _conversations_list,
    ("conversations", "show"): _conversations_show,
    ("acus", "list"): _acus_list,
    ("acu", "show"): _acu_show,
    ("acu", "history"): _acu_history,
    ("acu", "edit"): _acu_edit,
    "verify": _verify,
}
