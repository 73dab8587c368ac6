"""Mailboxes with real processes: a relay holds a device's ops while the other device is away,
across a relay restart and a SIGKILL; the recipient takes them all and the relay ends empty."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import trio

from node.local_cluster import NodeProcess
from tests.integration.conftest import FAST_REDIAL_ENV, StartNode, run_cli
from tests.integration.test_sync import conversation_file, family, import_file, verify

WAIT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_relay(start: StartNode, port: int, **env: str) -> NodeProcess:
    return await start(
        "relay",
        listen=[f"/ip4/127.0.0.1/tcp/{port}"],
        env={**FAST_REDIAL_ENV, "VIVIM_RELAY": "1", **env},
    )


async def cli_json(node: NodeProcess, *args: str) -> Any:
    result = await run_cli(*args, "--json", "--data-dir", str(node.data_dir))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    return json.loads(result.stdout)


async def mailbox_status(node: NodeProcess) -> Any:
    return await cli_json(node, "mailbox", "status")


async def relay_status(node: NodeProcess) -> Any:
    return await cli_json(node, "relay", "status")


async def own_head(node: NodeProcess) -> int:
    status = await cli_json(node, "sync", "status")
    return int(status["heads"].get(node.peer_id, 0))


async def heads(node: NodeProcess) -> dict[str, int]:
    return dict((await cli_json(node, "sync", "status"))["heads"])


async def test_a_relay_holds_a_devices_ops_until_the_other_device_takes_them(
    start: StartNode, tmp_path: Path
) -> None:
    port = free_port()
    relay = await start_relay(start, port)
    first, second = await family(start, tmp_path, 2)
    await cli_json(first, "mailbox", "register", relay.addr)
    # The relay list reaches the second device by sync; it registers too.
    with trio.fail_after(WAIT_S):
        while not (await mailbox_status(second))["relays"]:
            await trio.sleep(0.1)
    await cli_json(second, "mailbox", "register", relay.addr)
    assert [r["relay"] for r in (await mailbox_status(second))["relays"]] == [relay.peer_id]

    await second.stop()
    before = await own_head(first)
    n = 0
    while await own_head(first) - before < 1000:
        await import_file(first, conversation_file(tmp_path / f"away{n}.json", f"away {n}", 40))
        n += 1
    written = await own_head(first)
    with trio.fail_after(WAIT_S):
        while (await mailbox_status(first))["outbox_envelopes"] or not (
            await relay_status(relay)
        )["envelopes"]:
            await trio.sleep(0.1)
    held = (await relay_status(relay))["envelopes"]
    await first.stop()

    # The relay keeps the mail across a clean restart and a SIGKILL.
    await relay.stop()
    relay = await start_relay(start, port)
    assert (await relay_status(relay))["envelopes"] == held
    await relay.stop(signal.SIGKILL)
    relay = await start_relay(start, port)
    assert (await relay_status(relay))["envelopes"] == held

    second = await start("device-1")
    with trio.fail_after(WAIT_S):
        while (await heads(second)).get(first.peer_id, 0) < written:
            await trio.sleep(0.2)
        while (await relay_status(relay))["envelopes"]:
            await trio.sleep(0.1)
    await second.stop()
    await verify(second)
    status = await mailbox_status(second)
    assert status["received"] == held
    assert status["received_by_outcome"] == {"applied": held}
