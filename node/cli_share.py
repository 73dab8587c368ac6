"""The sharing commands: circle create/add/remove/list, share, share revoke, shares, access.

They talk to the running node through its control API (node/sharing_api.py): a share signs with
this device's key and raises a sharing level, an op the node announces to our other devices.
`acus list --received` (node/cli_vault.py) calls `print_received` here.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.errors import NodeError

COMMANDS = ("circle", "share", "shares", "access")


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    circle = commands.add_parser(
        "circle",
        parents=parents,
        help="circles of friends to share with",
        description="A circle is a named group of friends with its own key. Adding or removing "
        "a member makes a new version with a new key wrapped for each member, so what you share "
        "after removing someone is unreadable to them.",
    )
    actions = circle.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=parents, help="create an empty circle")
    create.add_argument("name", metavar="NAME")
    add = actions.add_parser("add", parents=parents, help="add a friend to a circle")
    add.add_argument("name", metavar="NAME")
    add.add_argument("did", metavar="DID")
    remove = actions.add_parser(
        "remove", parents=parents, help="remove a member (a new key for the others)"
    )
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("did", metavar="DID")
    actions.add_parser("list", parents=parents, help="circles, versions and members")

    share = commands.add_parser(
        "share",
        parents=parents,
        help="share an ACU, or `share revoke GRANT_ID`",
        usage="vivim-node share ACU_ID (--with DID | --circle NAME | --network | --global) "
        "[--annotate] [--remix] [--reshare]\n       vivim-node share revoke GRANT_ID",
        description="Share an ACU end-to-end encrypted with a friend, a circle or every friend "
        "(the network), or publish it globally (permanent: a global grant can never be "
        "revoked). The ACU's sharing level rises and never falls. `share revoke GRANT_ID` stops "
        "a grant's future access; what was received stays received.",
    )
    share.add_argument("words", nargs="+", metavar="ACU_ID", help=argparse.SUPPRESS)
    target = share.add_mutually_exclusive_group()
    target.add_argument("--with", dest="with_did", metavar="DID", help="a friend's DID")
    target.add_argument("--circle", metavar="NAME", help="one of your circles")
    target.add_argument("--network", action="store_true", help="every friend")
    target.add_argument(
        "--global", dest="everyone", action="store_true", help="everyone, forever (publish)"
    )
    for flag in ("annotate", "remix", "reshare"):
        share.add_argument(f"--{flag}", action="store_true", help=f"also allow {flag}")

    shares = commands.add_parser("shares", parents=parents, help="your grants and their state")
    shares.add_argument("acu_id", nargs="?", metavar="ACU_ID", help="only this ACU's")

    access = commands.add_parser(
        "access", parents=parents, help="what a DID may do with one of your ACUs"
    )
    access.add_argument("acu_id", metavar="ACU_ID")
    access.add_argument("did", metavar="DID")


def run(args: argparse.Namespace, data_dir: Path) -> int:
    from node.identity import load_public_identity
    from node.runtime import NotRunning, read_runtime_file

    load_public_identity(data_dir)
    try:
        read_runtime_file(data_dir)
    except NotRunning as err:
        raise NotRunning(
            f"`{args.command}` talks to the running node: start `vivim-node run --data-dir "
            f"{data_dir}` and run it again"
        ) from err
    handler = HANDLERS[args.command]
    return handler(data_dir, args)


def _call(data_dir: Path, method: str, path: str, body: Any = None) -> Any:
    from node.api_client import request_json

    return request_json(data_dir, method, path, body)


def _print(args: argparse.Namespace, value: Any, text: Callable[[Any], None]) -> None:
    if args.json:
        print(json.dumps(value, indent=2))
    else:
        text(value)


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _circle(data_dir: Path, args: argparse.Namespace) -> int:
    if args.action == "list":
        result = _call(data_dir, "GET", "/v1/circles")

        def listing(r: dict[str, Any]) -> None:
            if not r["circles"]:
                print("no circles: make one with `vivim-node circle create NAME`")
            for c in r["circles"]:
                print(f"{c['name']}  version {c['version']}  {len(c['members'])} member(s)")
                for member in c["members"]:
                    print(f"  {member}")

        _print(args, result, listing)
        return 0
    if args.action == "create":
        result = _call(data_dir, "POST", "/v1/circles", {"name": args.name})
    elif args.action == "add":
        path = f"/v1/circles/{_quote(args.name)}/members"
        result = _call(data_dir, "POST", path, {"did": args.did})
    else:
        path = f"/v1/circles/{_quote(args.name)}/members/{_quote(args.did)}"
        result = _call(data_dir, "DELETE", path)

    def changed(c: dict[str, Any]) -> None:
        print(f"circle {c['name']}: version {c['version']}, {len(c['members'])} member(s)")

    _print(args, result, changed)
    return 0


def _share(data_dir: Path, args: argparse.Namespace) -> int:
    words = args.words
    if words[0] == "revoke":
        if len(words) != 2:
            raise NodeError("usage: vivim-node share revoke GRANT_ID")
        result = _call(data_dir, "POST", f"/v1/shares/{_quote(words[1])}/revoke")
        _print(args, result, lambda g: print(f"revoked grant {g['id']} ({_target(g)})"))
        return 0
    if len(words) != 1:
        raise NodeError("share one ACU at a time: vivim-node share ACU_ID --with DID ...")
    if args.with_did:
        kind, target = "did", args.with_did
    elif args.circle:
        kind, target = "circle", args.circle
    elif args.network:
        kind, target = "network", None
    elif args.everyone:
        kind, target = "global", None
    else:
        raise NodeError("say whom to share with: --with DID, --circle NAME, --network or --global")
    permissions = [p for p in ("annotate", "remix", "reshare") if getattr(args, p)]
    body = {"acu_id": words[0], "target_kind": kind, "target": target, "permissions": permissions}
    result = _call(data_dir, "POST", "/v1/shares", body)

    def shared(g: dict[str, Any]) -> None:
        print(f"shared {g['acu_id']} with {_target(g)}: {', '.join(g['permissions'])}")
        print(f"grant {g['id']}")
        if g["target_kind"] == "global":
            print("published globally: this is permanent and cannot be revoked")

    _print(args, result, shared)
    return 0


def _target(grant: dict[str, Any]) -> str:
    kind = grant["target_kind"]
    if kind == "circle":
        return f"circle {grant['circle_name'] or grant['target']} (v{grant['circle_version']})"
    if kind == "did":
        return str(grant["target"])
    return "the network (every friend)" if kind == "network" else "everyone (global)"


def _shares(data_dir: Path, args: argparse.Namespace) -> int:
    path = "/v1/shares" + (f"?acu_id={_quote(args.acu_id)}" if args.acu_id else "")
    result = _call(data_dir, "GET", path)

    def listing(r: dict[str, Any]) -> None:
        if not r["shares"]:
            print("nothing shared yet: `vivim-node share ACU_ID --with DID`")
        for g in r["shares"]:
            state = "revoked" if g["revoked_at_ms"] is not None else "active"
            print(
                f"{g['id']}  {g['acu_id']}  {state:7}  {_target(g)}  {','.join(g['permissions'])}"
            )

    _print(args, result, listing)
    return 0


def _access(data_dir: Path, args: argparse.Namespace) -> int:
    path = f"/v1/acus/{_quote(args.acu_id)}/access?did={_quote(args.did)}"
    result = _call(data_dir, "GET", path)
    _print(
        args,
        result,
        lambda a: print(f"{a['rule']}: {', '.join(a['permissions']) or 'nothing'}"),
    )
    return 0


def print_received(client: Any, args: argparse.Namespace) -> int:
    """`acus list --received`, through the node's API or straight on the data directory."""
    if client.mode == "api":
        from node.api_client import request_json

        result = request_json(client._data_dir, "GET", "/v1/received")
    else:
        from node import sharing_ops

        result = sharing_ops.received(client._db, None, int(time.time() * 1000))

    def listing(r: dict[str, Any]) -> None:
        if not r["acus"]:
            print("nothing received yet: friends' shares appear here")
        for a in r["acus"]:
            first_line = a["content"].strip().splitlines()[0] if a["content"].strip() else ""
            state = "revoked" if a["revoked"] else ",".join(a["permissions"])
            print(f"{a['acu_id']}  {a['type']:5} from {a['author']}  [{state}]  {first_line[:50]}")

    _print(args, result, listing)
    return 0


HANDLERS: dict[str, Callable[[Path, argparse.Namespace], int]] = {
    "circle": _circle,
    "share": _share,
    "shares": _shares,
    "access": _access,
}
