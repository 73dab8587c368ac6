"""The device and identity commands of the CLI: device list/revoke/approve/pair, identity rotate.

`device pair` needs the running node (it answers the new device on /vivim/pair/1.0.0); the
others go through the node when it runs and straight to the data directory when it does not,
like the vault commands (node/vault_client.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.errors import NodeError

COMMANDS = ("device", "identity", "sync")
# A pairing code lives at most 10 minutes: long enough to walk to the other device and type a
# command, short enough that a code seen over a shoulder soon stops working.
MAX_CODE_TTL_S = 600  # node.pairing.MAX_CODE_TTL_S, which the node enforces


class NotConfirmed(NodeError):
    """A destructive command was not confirmed."""


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    device = commands.add_parser(
        "device",
        parents=parents,
        help="this identity's devices: list, pair a new one, revoke, approve again",
        description="Each device has its own key and acts for your identity (DID) through a "
        "certificate signed by the identity key or by another trusted device.",
    )
    actions = device.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=parents, help="list devices, who approved them, status")
    pair = actions.add_parser(
        "pair",
        parents=parents,
        help="print a one-time code that lets a new device join (needs the running node)",
        description="Print a one-time code for `vivim-node init --join CODE` on the new device. "
        "The code works once and expires after --ttl seconds; the running node answers the new "
        "device, so keep it running (and reachable from the new device: see `run --listen`).",
    )
    pair.add_argument(
        "--ttl",
        type=int,
        default=MAX_CODE_TTL_S,
        metavar="SECONDS",
        help=f"how long the code works, 1 to {MAX_CODE_TTL_S} (default {MAX_CODE_TTL_S})",
    )
    revoke = actions.add_parser(
        "revoke",
        parents=parents,
        help="revoke a device: its later ops and requests are refused everywhere",
        description="Revoke a device. The devices it approved stop being trusted too (the "
        "cascade, listed first) unless another trusted device approves them again "
        "(`device approve`). A revoked device is never trusted again.",
    )
    revoke.add_argument("peer_id", metavar="PEER_ID")
    revoke.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    approve = actions.add_parser(
        "approve",
        parents=parents,
        help="approve a device again (after a revocation cascaded to it)",
    )
    approve.add_argument("peer_id", metavar="PEER_ID")

    sync = commands.add_parser(
        "sync", parents=parents, help="syncing with your other devices: how far along it is"
    )
    sync_actions = sync.add_subparsers(dest="action", required=True, metavar="ACTION")
    sync_actions.add_parser(
        "status",
        parents=parents,
        help="per peer: what it holds, how many ops we lack (lag), last sync and errors",
    )

    identity = commands.add_parser("identity", parents=parents, help="the identity key: rotate it")
    identity_actions = identity.add_subparsers(dest="action", required=True, metavar="ACTION")
    identity_actions.add_parser(
        "rotate",
        parents=parents,
        help="replace the identity key (on the device that holds it); the DID does not change",
        description="Make a new identity key, signed by the current one (key version + 1). "
        "What the old key signed before now stays valid; anything it signs later is refused.",
    )


def run(args: argparse.Namespace, data_dir: Path) -> int:
    if args.command == "device" and args.action == "pair":
        return _pair(args, data_dir)
    from node.vault_client import open_vault_client

    with open_vault_client(data_dir) as client:
        handler = HANDLERS[(args.command, args.action)]
        return handler(client, args)


def _print(args: argparse.Namespace, value: Any, text: Callable[[Any], None]) -> None:
    if args.json:
        print(json.dumps(value, indent=2))
    else:
        text(value)


def _list(client: Any, args: argparse.Namespace) -> int:
    def text(result: dict[str, Any]) -> None:
        print(f"identity {result['did']} (key version {result['identity_key_version']})")
        for device in result["devices"]:
            mark = "*" if device["this_device"] else " "
            line = f"{mark} {device['peer_id']}  {device['status']:9}"
            if device["status"] == "trusted":
                line += f"  approved by {device['approved_by']}"
            elif device["revoked_by"]:
                line += f"  revoked by {device['revoked_by']}"
            print(line)
        print("(* this device)")

    _print(args, client.call("list_devices"), text)
    return 0


def _revoke(client: Any, args: argparse.Namespace) -> int:
    plan = client.call("plan_revocation", peer_id=args.peer_id)
    cascade = plan["cascade"]
    if not args.json or not args.yes:
        print(f"revoking {plan['target']}", file=sys.stderr)
        if cascade:
            print("also stops trusting the devices only it approved:", file=sys.stderr)
            for peer_id in cascade:
                print(f"  {peer_id}", file=sys.stderr)
            print("(approve any of them again with `vivim-node device approve`)", file=sys.stderr)
    if not args.yes:
        if not sys.stdin.isatty():
            raise NotConfirmed("not revoked: add --yes to confirm (stdin is not a terminal)")
        answer = input("revoke? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise NotConfirmed("not revoked")
    result = client.call("revoke_device", peer_id=args.peer_id)
    _print(args, result, lambda r: print(f"revoked {r['revoked']}"))
    return 0


def _approve(client: Any, args: argparse.Namespace) -> int:
    result = client.call("approve_device", peer_id=args.peer_id)
    _print(args, result, lambda r: print(f"approved {r['approved']}: {r['status']}"))
    return 0


def _rotate(client: Any, args: argparse.Namespace) -> int:
    result = client.call("rotate_identity")
    _print(
        args,
        result,
        lambda r: print(f"identity key of {r['did']} is now version {r['key_version']}"),
    )
    return 0


def _sync_status(client: Any, args: argparse.Namespace) -> int:
    def text(status: dict[str, Any]) -> None:
        print(f"this vault holds {status['ops_held']} ops of {len(status['heads'])} device(s)")
        if not status["peers"]:
            print("no peer synced with yet")
        for peer in status["peers"]:
            state = "in sync" if peer["lag_ops"] == 0 else f"{peer['lag_ops']} ops behind it"
            line = f"  {peer['peer_id']}  {state}, {peer['ops_received']} ops received"
            if peer["last_success_ms"]:
                line += f", last synced {_ago(peer['last_success_ms'])}"
            if peer["consecutive_failures"]:
                line += f"; {peer['consecutive_failures']} failure(s): {peer['last_error']}"
            print(line)

    _print(args, client.call("sync_status"), text)
    return 0


def _ago(ms: int) -> str:
    seconds = max(0.0, time.time() - ms / 1000)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _pair(args: argparse.Namespace, data_dir: Path) -> int:
    from node.api_client import request_json
    from node.identity import load_public_identity
    from node.runtime import NotRunning, read_runtime_file

    if not 1 <= args.ttl <= MAX_CODE_TTL_S:
        raise NodeError(f"--ttl must be between 1 and {MAX_CODE_TTL_S} seconds, got {args.ttl}")
    load_public_identity(data_dir)
    try:
        read_runtime_file(data_dir)
    except NotRunning as err:
        raise NotRunning(
            f"pairing needs the running node, which answers the new device: start "
            f"`vivim-node run --data-dir {data_dir}` and run `device pair` again"
        ) from err
    result = request_json(data_dir, "POST", "/v1/pairing/codes", {"ttl_s": args.ttl})

    def text(r: dict[str, Any]) -> None:
        print("on the new device, run:")
        print(f"  vivim-node init --join {r['code']}")
        print(f"the code works once, for {args.ttl} s; this node must keep running until then")

    _print(args, result, text)
    return 0


HANDLERS: dict[tuple[str, str], Callable[[Any, argparse.Namespace], int]] = {
    ("device", "list"): _list,
    ("device", "revoke"): _revoke,
    ("device", "approve"): _approve,
    ("identity", "rotate"): _rotate,
    ("sync", "status"): _sync_status,
}
