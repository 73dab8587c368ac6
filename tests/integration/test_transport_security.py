"""The node speaks Noise only: plaintext and secio dialers are refused; standard ping/identify work.

The dialers here are real py-libp2p hosts in the test process, dialing the node process over TCP.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.host.ping import ID as PING_PROTOCOL_ID
from libp2p.host.ping import PING_LENGTH
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL_ID
from libp2p.identity.identify.identify import parse_identify_response
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.secio.transport import ID as SECIO_PROTOCOL_ID
from libp2p.security.secio.transport import Transport as SecioTransport
from multiaddr import Multiaddr

from node.host import build_host
from tests.integration.conftest import StartNode

LISTEN = [Multiaddr("/ip4/127.0.0.1/tcp/0")]


def plaintext_host() -> IHost:
    key_pair = create_new_key_pair()
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair)},
    )


def secio_host() -> IHost:
    key_pair = create_new_key_pair()
    return new_host(
        key_pair=key_pair, sec_opt={TProtocol(SECIO_PROTOCOL_ID): SecioTransport(key_pair)}
    )


def strip_uvarint_prefix(data: bytes) -> bytes:
    """identify messages are length-prefixed (uvarint) on the wire."""
    length, shift = 0, 0
    for i, byte in enumerate(data):
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            body = data[i + 1 :]
            assert len(body) == length
            return body
    raise AssertionError("truncated uvarint")


@pytest.mark.parametrize("make_dialer", [plaintext_host, secio_host], ids=["plaintext", "secio"])
async def test_a_dialer_without_noise_is_refused(start: StartNode, make_dialer) -> None:  # type: ignore[no-untyped-def]
    node = await start("a")
    dialer = make_dialer()
    async with dialer.run(LISTEN):
        with trio.fail_after(20), pytest.raises(BaseLibp2pError):
            await dialer.connect(info_from_p2p_addr(Multiaddr(node.addr)))
        assert node.peer_id not in {str(p) for p in dialer.get_connected_peers()}
    # The node keeps serving: nobody is connected, and the API answers.
    assert await node.connected_peers() == set()
    assert (await node.api("/v1/status"))["connected_peers"] == 0


async def test_a_noise_dialer_connects_pings_and_identifies(start: StartNode) -> None:
    node = await start("a")
    dialer = build_host(os.urandom(32))
    async with dialer.run(LISTEN):
        info = info_from_p2p_addr(Multiaddr(node.addr))
        with trio.fail_after(20):
            await dialer.connect(info)

            ping = await dialer.new_stream(info.peer_id, [PING_PROTOCOL_ID])
            payload = os.urandom(PING_LENGTH)
            await ping.write(payload)
            echoed = b""
            while len(echoed) < PING_LENGTH:
                echoed += await ping.read(PING_LENGTH - len(echoed))
            assert echoed == payload
            await ping.close()

            identify = await dialer.new_stream(info.peer_id, [IDENTIFY_PROTOCOL_ID])
            response = b""
            # The responder writes one message and closes its side.
            with contextlib.suppress(StreamEOF):
                while True:
                    response += await identify.read(65536)
        message = parse_identify_response(strip_uvarint_prefix(response))
        assert str(PING_PROTOCOL_ID) in message.protocols
        assert str(IDENTIFY_PROTOCOL_ID) in message.protocols
        assert any(Multiaddr(a) for a in message.listen_addrs)
        with trio.fail_after(20):
            while node.peer_id not in {str(p) for p in dialer.get_connected_peers()}:
                await trio.sleep(0.05)
        assert dialer.get_id().to_base58() in await node.connected_peers()
        await dialer.close()
