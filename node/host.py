"""The libp2p host: TCP, Noise only, Yamux only; identify and ping left standard.

py-libp2p 0.8.1's default host also accepts /plaintext/2.0.0, /secio/1.0.0 and TLS, and offers
mplex: we pass explicit security and muxer options so that a dialer offering anything but Noise
fails security negotiation, and every connection is authenticated and encrypted. The identify and
ping handlers of the default host are kept as they are, so go-libp2p and js-libp2p peers can
identify and ping us.
"""

from __future__ import annotations

import os
import socket

from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.utils.address_validation import expand_wildcard_address
from multiaddr import Multiaddr

from node.errors import NodeError

# One connection per peer: with more, py-libp2p waits 250 ms per dial (happy eyeballs) and our
# protocols gain nothing from parallel connections (Yamux multiplexes streams on one).
MAX_CONNECTIONS_PER_PEER = 1
# A peer that does not finish the TCP + Noise + Yamux handshake within this is given up on.
DIAL_TIMEOUT_S = 5.0


def advertised_addrs(listening: list[Multiaddr]) -> list[Multiaddr]:
    """What we tell peers: a wildcard listen address (0.0.0.0, ::) is replaced by one address per
    local interface, since nobody can dial 0.0.0.0."""
    return [addr for listen in listening for addr in expand_wildcard_address(listen)]


# py-libp2p's Yamux reads its tuning from PY_YAMUX_* variables at call time. By default
# (RELEASE_ON_READ=1) a stream sends a window update after every read, each one a Noise frame
# and a send: ~40 for every 2 MiB sync batch, ~20% of the receiving node's trio thread in
# scripts/bench_sync.py. Off, a stream gives its window back in half-window steps, as go-yamux
# does. setdefault: an operator's own setting wins.
YAMUX_TUNING = {"PY_YAMUX_RELEASE_ON_READ": "0"}


def build_host(device_seed: bytes) -> IHost:
    """A host whose libp2p identity is this device's Ed25519 key (device id = peer id)."""
    for name, value in YAMUX_TUNING.items():
        os.environ.setdefault(name, value)
    key_pair = create_new_key_pair(device_seed)
    # The Noise static key is separate from the identity key and signed by it during the
    # handshake (noise-libp2p spec), so a fresh one per process is correct.
    noise_static = create_x25519_key_pair().private_key
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=noise_static)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        addrs_factory=advertised_addrs,
        connection_config=ConnectionConfig(
            max_connections_per_peer=MAX_CONNECTIONS_PER_PEER,
            dial_timeout=DIAL_TIMEOUT_S,
            # The swarm's auto-connector dials peers from the peerstore until it holds
            # min_connections; which peers we keep connections to is our decision (bootstrap
            # list, later sync), so it has nothing to do.
            min_connections=0,
            low_watermark=0,
        ),
    )
    # The swarm would retry a failed dial 3 times on its own; our redial loop owns retry policy
    # (node/bootstrap.py), so one dial is one attempt and its failure is reported at once.
    host.get_network().retry_config = RetryConfig(max_retries=0)  # type: ignore[attr-defined]
    return host


class ListenError(NodeError):
    """A listen address could not be bound."""


def _bind_problem(addr: str) -> str:
    """Why binding a listen address fails (py-libp2p only logs it), for the error message."""
    ma = Multiaddr(addr)
    family, host = (
        (socket.AF_INET6, ma.value_for_protocol("ip6"))
        if "ip6" in [p.name for p in ma.protocols()]
        else (socket.AF_INET, ma.value_for_protocol("ip4"))
    )
    port = int(ma.value_for_protocol("tcp"))
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            return err.strerror or str(err)
    return "the listener did not start (see the log above)"


def check_listening(host: IHost, wanted: tuple[str, ...]) -> None:
    listening = host.get_transport_addrs()
    if len(listening) < len(wanted):
        got = {str(a) for a in listening}
        missing = [a for a in wanted if a not in got and not a.endswith("/tcp/0")] or list(wanted)
        addr = missing[0]
        raise ListenError(
            f"cannot listen on {addr}: {_bind_problem(addr)}. Pick another address or port "
            "with --listen /ip4/127.0.0.1/tcp/<port> (port 0: any free port)"
        )
