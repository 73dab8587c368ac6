"""The friends commands: `invite`, and `friend add|requests|accept|block|unblock|list`.

All of them go through the running node: an invite names its addresses, requests and
acceptances travel over the network, and the node answers what it holds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMANDS = ("invite", "friend")
TRUST_LEVELS = ("acquaintance", "trusted", "close")  # store.peering.TRUST_LEVELS
DEFAULT_INVITE_HOURS = 7 * 24  # node.peering.DEFAULT_INVITE_HOURS
# `friend add` and `accept` may dial the friend and then their relays.
SEND_TIMEOUT_S = 90.0


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    invite = commands.add_parser(
        "invite",
        parents=parents,
        help="print an invite code to give a friend (needs the running node)",
        description="An invite code carries your DID, your encryption key's binding, this "
        "device's addresses, your relays and a one-time token. Whoever you give it to can send "
        "you a friend request with `vivim-node friend add CODE`; you still accept it yourself.",
    )
    invite.add_argument(
        "--hours",
        type=int,
        default=DEFAULT_INVITE_HOURS,
        metavar="H",
        help=f"how long the code can be used (default {DEFAULT_INVITE_HOURS})",
    )
    friend = commands.add_parser(
        "friend",
        parents=parents,
        help="friend requests, accepting, blocking and your friends (needs the running node)",
    )
    actions = friend.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        parents=parents,
        help="send a friend request to the person whose invite code this is",
        description="Sends a signed request to their device, or, when it is offline, through "
        "the relays their invite names.",
    )
    add.add_argument("code", metavar="CODE", help="the invite code (vivim-invite:...)")
    add.add_argument("--message", default="", metavar="TEXT", help="a short note for them")
    actions.add_parser("requests", parents=parents, help="friend requests pending, both ways")
    accept = actions.add_parser(
        "accept", parents=parents, help="accept a friend request; sends them your acceptance"
    )
    accept.add_argument("did", metavar="DID", help="the requester's DID (see `friend requests`)")
    accept.add_argument(
        "--trust",
        choices=TRUST_LEVELS,
        default="trusted",
        help="how much you trust them (kept here, never sent; default trusted)",
    )
    block = actions.add_parser(
        "block",
        parents=parents,
        help="drop every request from this DID from now on, and end any connection with it",
    )
    block.add_argument("did", metavar="DID")
    unblock = actions.add_parser(
        "unblock",
        parents=parents,
        help="take requests from this DID again (to be friends again, one of you sends a new one)",
    )
    unblock.add_argument("did", metavar="DID")
    actions.add_parser("list", parents=parents, help="your friends (accepted connections)")


def run(args: argparse.Namespace, data_dir: Path) -> int:
    from node.api_client import request_json
    from node.identity import load_public_identity
    from node.runtime import NotRunning, read_runtime_file

    load_public_identity(data_dir)
    name = "invite" if args.command == "invite" else f"friend {args.action}"
    try:
        read_runtime_file(data_dir)
    except NotRunning as err:
        raise NotRunning(
            f"`{name}` needs the running node: start `vivim-node run --data-dir {data_dir}` "
            "and run it again"
        ) from err

    def call(method: str, path: str, body: Any = None) -> Any:
        return request_json(data_dir, method, path, body, SEND_TIMEOUT_S)

    if args.command == "invite":
        result = call("POST", "/v1/peering/invite", {"hours": args.hours})
        _print(args, result, _invite_text)
    elif args.action == "add":
        result = call("POST", "/v1/friends/add", {"code": args.code, "message": args.message})
        _print(args, result, _added_text)
    elif args.action == "requests":
        _print(args, call("GET", "/v1/friends/requests"), _requests_text)
    elif args.action == "accept":
        result = call("POST", "/v1/friends/accept", {"did": args.did, "trust": args.trust})
        _print(
            args,
            result,
            lambda r: print(f"accepted {r['did']} as {r['trust']}; acceptance sent: {r['via']}"),
        )
    elif args.action == "block":
        result = call("POST", "/v1/friends/block", {"did": args.did})
        _print(args, result, lambda r: print(f"blocked {r['did']}"))
    elif args.action == "unblock":
        result = call("POST", "/v1/friends/unblock", {"did": args.did})
        _print(
            args,
            result,
            lambda r: print(
                f"unblocked {r['did']}" if r["was_blocked"] else f"{r['did']} was not blocked"
            ),
        )
    else:
        _print(args, call("GET", "/v1/friends"), _friends_text)
    return 0


def _print(args: argparse.Namespace, value: Any, text: Callable[[Any], None]) -> None:
    if args.json:
        print(json.dumps(value, indent=2))
    else:
        text(value)


def _invite_text(result: dict[str, Any]) -> None:
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(result["expires_at_ms"] / 1000))
    print(result["code"])
    print(f"give this code to one friend; it works once, until {until}")


def _added_text(result: dict[str, Any]) -> None:
    if result["state"] == "accepted":
        print(f"{result['did']} is your friend (they had accepted already)")
    else:
        print(f"friend request sent to {result['did']} ({result['via']}); waiting for them")


def _requests_text(result: dict[str, Any]) -> None:
    if not result["requests"]:
        print("no friend requests pending")
    for row in result["requests"]:
        if row["direction"] == "incoming":
            how = "with your invite" if row["via_invite"] else "without an invite"
            note = f": {row['message']!r}" if row["message"] else ""
            print(f"from {row['did']} ({how}){note}")
            print(f"  accept: vivim-node friend accept {row['did']} [--trust close]")
        else:
            print(f"to {row['did']}: waiting for them to accept")


def _friends_text(result: dict[str, Any]) -> None:
    if not result["friends"]:
        print("no friends yet: `vivim-node invite` prints a code to give one")
    for row in result["friends"]:
        print(f"{row['did']}  {row['trust']}  {len(row['devices'])} device(s)")
