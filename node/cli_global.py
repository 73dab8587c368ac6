"""The global commons commands: `publish ID`, `global list`, `global show ID`.

They go through the running node when it runs (`publish` then gossips at once) and straight to
the data directory when it does not: a publication made offline is stored, and peers pull it
from this node once it runs and connects (`/vivim/global/1.0.0`).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node.errors import NodeError

COMMANDS = ("publish", "global")
PUBLISH_TIMEOUT_S = 60.0


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    publish = commands.add_parser(
        "publish",
        parents=parents,
        help="publish an ACU or a conversation to the global commons (public, permanent)",
        description="Publish an ACU or a conversation (its messages and ACUs) to the global "
        "commons: anyone may fetch, verify and keep it, and it can never be withdrawn. Its ACUs "
        "rise to the GLOBAL sharing level with an irrevocable global grant. Publishing the same "
        "thing again makes the next version, which points to the previous one.",
    )
    publish.add_argument("subject", metavar="ACU_ID|CONVERSATION_ID")
    publish.add_argument("--title", default="", help="a title for the publication")
    publish.add_argument(
        "--tags", default="", metavar="TAG,TAG", help="comma-separated tags, e.g. rust,memory"
    )
    publish.add_argument("--license", default="", help="e.g. CC-BY-4.0")

    global_ = commands.add_parser(
        "global",
        parents=parents,
        help="global publications held here: your own and those received",
    )
    actions = global_.add_subparsers(dest="action", required=True, metavar="ACTION")
    list_ = actions.add_parser("list", parents=parents, help="publications, newest first")
    list_.add_argument("--limit", type=int, default=50, metavar="N")
    show = actions.add_parser("show", parents=parents, help="one publication with its content")
    show.add_argument("publication_id", metavar="ID")


def run(args: argparse.Namespace, data_dir: Path) -> int:
    with _open(data_dir) as call:
        if args.command == "publish":
            tags = [t.strip() for t in args.tags.split(",") if t.strip()]
            body = {
                "subject_id": args.subject,
                "title": args.title,
                "tags": tags,
                "license": args.license,
            }
            result = call("POST", "/v1/global/publish", body)
            _print(args, result, _print_published)
        elif args.action == "list":
            if args.limit < 1:
                raise NodeError(f"--limit must be at least 1, got {args.limit}")
            result = call("GET", f"/v1/global?limit={args.limit}", None)
            _print(args, result["publications"], _print_list)
        else:
            path = "/v1/global/" + urllib.parse.quote(args.publication_id, safe="")
            _print(args, call("GET", path, None), _print_show)
    return 0


@contextmanager
def _open(data_dir: Path) -> Iterator[Any]:
    """A call(method, path, body) through the running node's API, or on the database."""
    from node.identity import is_initialised, load_public_identity
    from node.runtime import NotRunning, read_runtime_file

    if not is_initialised(data_dir):
        load_public_identity(data_dir)  # raises NotInitialised, with what to do
    try:
        read_runtime_file(data_dir)
    except NotRunning:
        with _direct(data_dir) as call:
            yield call
        return
    from node.api_client import request_json

    yield lambda method, path, body: request_json(data_dir, method, path, body, PUBLISH_TIMEOUT_S)


@contextmanager
def _direct(data_dir: Path) -> Iterator[Any]:
    from node.identity import DATABASE_FILE, load_local_identity
    from node.runtime import run_lock
    from store import commons
    from store.database import open_database

    with run_lock(data_dir, holder="a vivim-node command"):
        db = open_database(data_dir / DATABASE_FILE)
        try:

            def call(method: str, path: str, body: Any) -> Any:
                if method == "POST":
                    published = commons.publish(
                        db,
                        load_local_identity(data_dir).signer(),
                        body["subject_id"],
                        title=body["title"],
                        tags=body["tags"],
                        license=body["license"],
                        now_ms=int(time.time() * 1000),
                    )
                    held = commons.get_publication(db, published.publication.id)
                    assert held is not None
                    return held[0].to_json() | {
                        "grants": list(published.grants),
                        "acus": len(published.grants),
                        "offline": True,
                    }
                if path.startswith("/v1/global?"):
                    limit = int(urllib.parse.parse_qs(path.split("?", 1)[1])["limit"][0])
                    rows = commons.list_publications(db, limit)
                    return {"publications": [row.to_json() for row in rows]}
                publication_id = urllib.parse.unquote(path.rsplit("/", 1)[1])
                held = commons.get_publication(db, publication_id)
                if held is None:
                    raise NodeError(f"no global publication {publication_id} here")
                return held[0].to_json() | {"content": commons.decoded_content(held[1])}

            yield call
        finally:
            db.close()


def _print(args: argparse.Namespace, value: Any, text: Any) -> None:
    if args.json:
        print(json.dumps(value, indent=2))
    else:
        text(value)


def _print_published(r: dict[str, Any]) -> None:
    print(f"published {r['subject_kind']} {r['subject_id']} as version {r['version']}")
    print(f"publication: {r['id']}")
    if r["previous_id"]:
        print(f"previous:    {r['previous_id']}")
    print(f"{r['acus']} ACU(s) now shared globally (irrevocable)")
    if r.get("offline"):
        print("the node is not running: peers get it once it runs and connects")


def _print_list(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no global publications here yet: `vivim-node publish ACU_ID` makes one")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["published_at_ms"] / 1000))
        source = "here" if r["received_from"] is None else "received"
        title = r["title"] or "(untitled)"
        print(f"{r['id']}  v{r['version']}  {r['subject_kind']:12} {when}  {source:8}  {title}")


def _print_show(r: dict[str, Any]) -> None:
    print(f"id:         {r['id']}")
    print(f"publisher:  {r['publisher_did']} (device {r['publisher_device']})")
    print(f"subject:    {r['subject_kind']} {r['subject_id']}, version {r['version']}")
    if r["previous_id"]:
        print(f"previous:   {r['previous_id']}")
    print(f"title:      {r['title']}")
    print(f"tags:       {', '.join(r['tags'])}")
    print(f"license:    {r['license']}")
    print(f"content id: {r['content_id']}")
    content = r["content"]
    if content.get("kind") == "acu":
        print()
        print(content["acu"]["content"])
    else:
        print(f"messages:   {len(content['messages'])}, ACUs: {len(content['acus'])}")
        for message in content["messages"]:
            print(f"\n[{message['role']}] {message['content']}")
