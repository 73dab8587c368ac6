"""The mailbox and relay commands: mailbox register/unregister/status, relay status.

`register` and `unregister` need the running node (it talks to the relay); the status commands
go through the node when it runs and straight to the data directory when it does not.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.errors import NodeError

COMMANDS = ("mailbox", "relay")
DEFAULT_QUOTA_MB = 256  # node.mailbox.DEFAULT_QUOTA_BYTES
DEFAULT_DAYS = 365  # node.mailbox.DEFAULT_REGISTRATION_DAYS
# Registering waits for the relay: a dial, an introduction and a registration.
REGISTER_TIMEOUT_S = 60.0


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    mailbox = commands.add_parser(
        "mailbox",
        parents=parents,
        help="mail held for you by relays while your devices are offline",
        description="Relays you trust hold encrypted mail for your identity while your "
        "devices are offline: ops for a device that is away, and (later) friends' shares. "
        "Only your devices can read it; the relay sees the size, the expiry and who deposited.",
    )
    actions = mailbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    register = actions.add_parser(
        "register",
        parents=parents,
        help="register at a relay (needs the running node) and add it to your relay list",
        description="Send the relay a registration signed by this device, then add the relay "
        "to your identity's relay list, which your other devices receive by sync. Run it again "
        "to renew, change the quota, or tell the relay about devices you revoked since.",
    )
    register.add_argument(
        "relay", metavar="RELAY_MULTIADDR", help="e.g. /ip4/192.0.2.7/tcp/7717/p2p/12D3KooW..."
    )
    register.add_argument(
        "--quota-mb",
        type=int,
        default=DEFAULT_QUOTA_MB,
        metavar="MB",
        help=f"how much mail the relay may hold for you (default {DEFAULT_QUOTA_MB})",
    )
    register.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        metavar="DAYS",
        help=f"how long the registration lasts (default {DEFAULT_DAYS})",
    )
    register.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="DID",
        help="another identity that may deposit mail for you; repeatable (your own devices "
        "always may)",
    )
    unregister = actions.add_parser(
        "unregister",
        parents=parents,
        help="withdraw from a relay: it drops your mail; it leaves your relay list",
    )
    unregister.add_argument("relay", metavar="RELAY", help="the relay's peer id or multiaddr")
    actions.add_parser(
        "status",
        parents=parents,
        help="your relays, what waits in the outbox, what was received",
    )

    relay = commands.add_parser(
        "relay",
        parents=parents,
        help="the relay role (`run --relay`): whose mail this node holds",
    )
    relay_actions = relay.add_subparsers(dest="action", required=True, metavar="ACTION")
    relay_actions.add_parser(
        "status", parents=parents, help="recipients registered here, envelopes and bytes held"
    )


def run(args: argparse.Namespace, data_dir: Path) -> int:
    if args.command == "mailbox" and args.action in ("register", "unregister"):
        return _change(args, data_dir)
    from node.vault_client import open_vault_client

    if args.command == "relay":
        from node.config import load_config

        # Whether this node is a relay is its configuration (file and environment; `run
        # --relay` is a flag of the running process, which the status cannot see).
        args.relay_configured = load_config(data_dir).relay
    with open_vault_client(data_dir) as client:
        handler = HANDLERS[(args.command, args.action)]
        return handler(client, args)


def _print(args: argparse.Namespace, value: Any, text: Callable[[Any], None]) -> None:
    if args.json:
        print(json.dumps(value, indent=2))
    else:
        text(value)


def _change(args: argparse.Namespace, data_dir: Path) -> int:
    from node.api_client import request_json
    from node.identity import load_public_identity
    from node.runtime import NotRunning, read_runtime_file

    load_public_identity(data_dir)
    try:
        read_runtime_file(data_dir)
    except NotRunning as err:
        raise NotRunning(
            f"`mailbox {args.action}` talks to the relay through the running node: start "
            f"`vivim-node run --data-dir {data_dir}` and run it again"
        ) from err
    if args.action == "unregister":
        result = request_json(
            data_dir, "POST", "/v1/mailbox/unregister", {"relay": args.relay}, REGISTER_TIMEOUT_S
        )
        _print(args, result, lambda r: print(f"left relay {r['relay']}: {r['result']}"))
        return 0
    if args.quota_mb < 1:
        raise NodeError(f"--quota-mb must be at least 1, got {args.quota_mb}")
    body = {
        "relay": args.relay,
        "quota_bytes": args.quota_mb * 1024 * 1024,
        "days": args.days,
        "allow": args.allow,
    }
    result = request_json(data_dir, "POST", "/v1/mailbox/register", body, REGISTER_TIMEOUT_S)

    def text(r: dict[str, Any]) -> None:
        until = time.strftime("%Y-%m-%d", time.gmtime(r["expires_at_ms"] / 1000))
        print(f"registered at relay {r['relay']} until {until}, quota {r['quota_bytes']} bytes")
        print(
            f"your identity now lists {r['relays']} relay(s); your other devices learn it by sync"
        )

    _print(args, result, text)
    return 0


def _mailbox_status(client: Any, args: argparse.Namespace) -> int:
    def text(status: dict[str, Any]) -> None:
        if not status["relays"]:
            print("no relays: register at one with `vivim-node mailbox register RELAY_MULTIADDR`")
        for relay in status["relays"]:
            print(f"relay {relay['relay']}  {' '.join(relay['addrs'])}")
        if status["outbox"]:
            for row in status["outbox"]:
                line = f"outbox: {row['envelopes']} envelope(s) for {row['relay']}"
                if row["last_error"]:
                    line += f", last error: {row['last_error']}"
                print(line)
        else:
            print("outbox: empty")
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(status["received_by_outcome"].items()))
        print(
            f"received: {status['received']} envelope(s)" + (f" ({outcomes})" if outcomes else "")
        )

    _print(args, client.call("mailbox_status"), text)
    return 0


def _relay_status(client: Any, args: argparse.Namespace) -> int:
    def text(status: dict[str, Any]) -> None:
        if not status["recipients"] and not args.relay_configured:
            print(
                "no recipient registered here; to be a relay, run the node with --relay "
                "(or set relay = true in config.toml)"
            )
            return
        print(
            f"{status['recipients']} recipient(s) registered, {status['envelopes']} envelope(s) "
            f"held, {status['bytes']} bytes"
        )
        for row in status["by_recipient"]:
            print(
                f"  {row['did']}  {row['envelopes']} envelope(s), "
                f"{row['bytes']} of {row['quota_bytes']} bytes"
            )

    _print(args, client.call("relay_status"), text)
    return 0


HANDLERS: dict[tuple[str, str], Callable[[Any, argparse.Namespace], int]] = {
    ("mailbox", "status"): _mailbox_status,
    ("relay", "status"): _relay_status,
}
