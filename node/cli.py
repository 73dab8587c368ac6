"""The `vivim-node` command line.

Every command takes --data-dir (default: $VIVIM_HOME, else ~/.local/share/vivim-node). Errors are
one line on stderr, `error: ...`, saying what went wrong and what to do, with a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node import cli_devices, cli_friends, cli_global, cli_mailbox, cli_share, cli_vault
from node.errors import NodeError, find_exception
from protocols.errors import ProtocolError
from store.errors import StoreError

# Raised with a message written for the user: a NodeError, or a store/protocol error such as a
# database written by a newer version or a corrupt record.
USER_ERRORS = (NodeError, StoreError, ProtocolError)

EPILOG = """\
first steps:
  vivim-node init                 create this device's identity and data directory
  vivim-node run                  run the node (prints one JSON ready line on stdout)
  vivim-node status               ask the running node how it is

  vivim-node device pair          on a device of yours with its node running: a one-time code
  vivim-node init --join CODE     on a new device: join your identity, then `run` it there

  vivim-node run --listen /ip4/0.0.0.0/tcp/7717 --bootstrap /ip4/<ip>/tcp/7717/p2p/<peer id>
                                  be reachable, and keep a connection to a peer
every command takes --data-dir DIR (default $VIVIM_HOME, else ~/.local/share/vivim-node);
`vivim-node COMMAND --help` explains one command.

environment: VIVIM_HOME (data dir), VIVIM_LISTEN, VIVIM_BOOTSTRAP, VIVIM_API_PORT,
VIVIM_LOG_LEVEL; flags win over the environment, which wins over <data dir>/config.toml.
"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data directory (default: $VIVIM_HOME, else ~/.local/share/vivim-node)",
    )
    common.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: info, or log_level in config.toml)",
    )
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print JSON instead of text")

    parser = argparse.ArgumentParser(
        prog="vivim-node",
        description="A local-first peer-to-peer node for your knowledge vault.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser(
        "init",
        parents=[common, json_flag],
        help="create the identity, device key, config and database",
        description="Create a new identity (DID), its encryption key, this device's key and "
        "certificate, config.toml and the database. Never overwrites an existing identity.",
    )
    init.add_argument(
        "--if-missing",
        action="store_true",
        help="succeed quietly when the data directory already holds an identity",
    )
    init.add_argument(
        "--join",
        metavar="CODE",
        help="join an existing identity instead: CODE is from `vivim-node device pair` on one "
        "of its devices (whose node must be running and reachable from here)",
    )

    commands.add_parser(
        "id",
        parents=[common, json_flag],
        help="print this node's DID, peer id and addresses",
        description="Print the DID, the peer id and the addresses other peers can dial.",
    )

    run = commands.add_parser(
        "run",
        parents=[common],
        help="run the node in the foreground",
        description="Run the node until SIGINT/SIGTERM. When ready it prints one JSON line on "
        'stdout: {"event": "ready", "did", "peer_id", "addrs", "api"}. Logs go to stderr.',
    )
    run.add_argument(
        "--listen",
        action="append",
        metavar="MULTIADDR",
        help="listen address, repeatable (default /ip4/127.0.0.1/tcp/7717)",
    )
    run.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="peer to dial and keep connected, ending in /p2p/<peer id>; repeatable",
    )
    run.add_argument(
        "--api-port", type=int, metavar="PORT", help="control API port on 127.0.0.1 (0: any)"
    )
    run.add_argument(
        "--relay",
        action="store_true",
        default=None,
        help="also be a relay: hold encrypted mail for people who register here (see "
        "relay_allow in config.toml to accept only some)",
    )

    commands.add_parser(
        "status",
        parents=[common, json_flag],
        help="show the running node's identity, addresses, uptime and peers",
    )
    commands.add_parser("peers", parents=[common, json_flag], help="list connected and known peers")
    cli_vault.add_commands(commands, [common, json_flag])
    cli_devices.add_commands(commands, [common, json_flag])
    cli_mailbox.add_commands(commands, [common, json_flag])
    cli_share.add_commands(commands, [common, json_flag])
    cli_friends.add_commands(commands, [common, json_flag])
    cli_global.add_commands(commands, [common, json_flag])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Everything vivim-node creates (keys, database, token, logs) is its owner's alone.
    os.umask(0o077)
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # `vivim-node acus list | head`: the reader left; that is not an error worth a trace.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (Exception, BaseExceptionGroup) as err:  # the process entry point: report, exit
        # Errors meant for the user, raised anywhere below (trio may have wrapped them in
        # exception groups): one line, what went wrong and what to do.
        user_error = find_exception(err, USER_ERRORS)
        if user_error is None:
            if find_exception(err, KeyboardInterrupt) is not None:
                return 130
            raise
        print(f"error: {user_error}", file=sys.stderr)
        return user_error.exit_code if isinstance(user_error, NodeError) else 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    # Imports are per command: `status` should not pay for importing libp2p (~0.6 s).
    from node.config import load_config, resolve_data_dir
    from node.logs import configure_logging

    data_dir = resolve_data_dir(args.data_dir)
    if args.command == "run":
        from node.runtime import EarlySignals

        early = EarlySignals()
        early.install()
        import trio

        from node.runner import run_node

        config = load_config(
            data_dir,
            {
                "listen": args.listen,
                "bootstrap": args.bootstrap,
                "api_port": args.api_port,
                "log_level": args.log_level,
                "relay": args.relay,
            },
        )
        configure_logging(config.log_level)
        trio.run(run_node, config, early)
        return 0

    configure_logging(args.log_level or "warning")
    if args.command == "init":
        return _init(data_dir, args)
    if args.command == "id":
        return _id(data_dir, args)
    if args.command == "status":
        return _status(data_dir, args)
    if args.command == "peers":
        return _peers(data_dir, args)
    if args.command in cli_vault.COMMANDS:
        return cli_vault.run(args, data_dir)
    if args.command in cli_devices.COMMANDS:
        return cli_devices.run(args, data_dir)
    if args.command in cli_mailbox.COMMANDS:
        return cli_mailbox.run(args, data_dir)
    if args.command in cli_share.COMMANDS:
        return cli_share.run(args, data_dir)
    if args.command in cli_friends.COMMANDS:
        return cli_friends.run(args, data_dir)
    if args.command in cli_global.COMMANDS:
        return cli_global.run(args, data_dir)
    raise AssertionError(args.command)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _init(data_dir: Path, args: argparse.Namespace) -> int:
    from node.identity import IdentityExists, init_data_dir

    try:
        if args.join:
            from node.join import join

            created = join(data_dir, args.join)
        else:
            created = init_data_dir(data_dir, now_ms=int(time.time() * 1000))
    except IdentityExists:
        if not args.if_missing:
            raise
        return 0
    if args.json:
        _print_json({"did": created.did, "peer_id": created.peer_id, "data_dir": str(data_dir)})
    else:
        print(f"{'joined' if args.join else 'created'} identity {created.did}")
        print(f"this device:     {created.peer_id}")
        print(f"data directory:  {data_dir}")
        print("next: vivim-node run")
    return 0


def _id(data_dir: Path, args: argparse.Namespace) -> int:
    from node.config import load_config
    from node.identity import load_public_identity
    from node.runtime import NotRunning, read_runtime_file

    identity = load_public_identity(data_dir)
    listen = list(load_config(data_dir).listen)
    try:
        addrs, running = list(read_runtime_file(data_dir)["addrs"]), True
    except NotRunning:
        addrs, running = [], False
    if args.json:
        _print_json(
            {
                "did": identity.did,
                "peer_id": identity.peer_id,
                "addrs": addrs,
                "listen": listen,
                "running": running,
            }
        )
        return 0
    print(f"did:     {identity.did}")
    print(f"peer id: {identity.peer_id}")
    for addr in addrs:
        print(f"addr:    {addr}")
    if not running:
        print(f"listen:  {', '.join(listen)} (configured; the node is not running)")
    return 0


def _status(data_dir: Path, args: argparse.Namespace) -> int:
    from node.api_client import get_json

    status = get_json(data_dir, "/v1/status")
    if args.json:
        _print_json(status)
        return 0
    print(f"did:       {status['did']}")
    print(f"peer id:   {status['peer_id']}")
    for addr in status["addrs"]:
        print(f"addr:      {addr}")
    print(f"uptime:    {status['uptime_s']:.0f} s")
    print(f"peers:     {status['connected_peers']} connected")
    print(f"version:   {status['version']}")
    return 0


def _peers(data_dir: Path, args: argparse.Namespace) -> int:
    from node.api_client import get_json

    peers = get_json(data_dir, "/v1/peers")["peers"]
    if args.json:
        _print_json(peers)
        return 0
    if not peers:
        print("no peers yet: add one with --bootstrap <multiaddr> or in config.toml")
    for peer in peers:
        state = "connected" if peer["connected"] else "seen"
        addr = peer["addrs"][0] if peer["addrs"] else ""
        print(f"{peer['peer_id']}  {state:9}  {addr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
