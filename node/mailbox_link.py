"""One client stream of /vivim/mailbox/1.0.0 to a relay: requests as awaitable calls.

The turn-taking and the bounds are protocols/mailbox.py's; this is the edge that writes its
frames and reads its answers. A relay's refusal raises `MailboxRefused` with the protocol's code
(the stream goes on); anything else that goes wrong with the stream raises `RelayUnreachable`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from node.errors import NodeError
from node.streams import close_quietly, read_some, reset_quietly
from protocols.envelope import Envelope
from protocols.errors import RemoteProtocolError
from protocols.mailbox import (
    MAILBOX_PROTOCOL_ID,
    MAX_FRAME,
    Acked,
    Fetched,
    Introduced,
    Listed,
    MailboxClient,
    MailboxError,
    NeedData,
    Response,
    Stored,
    take_fitting,
)
from protocols.mailbox_records import RelayRegistration
from store.devices import Credentials


def fitting_deposit(envelopes: Sequence[Envelope]) -> tuple[Envelope, ...]:
    """The longest prefix of `envelopes` one Deposit holds (never empty if `envelopes` is not):
    the same bound as a Fetched."""
    return take_fitting(envelopes)


# A relay that does not answer a request within this is given up on for now (the outbox and
# the recipient try again later).
REQUEST_TIMEOUT_S = 30.0
DIAL_TIMEOUT_S = 10.0


class MailboxRefused(NodeError):
    """The relay refused a request; `code` is the protocol's refusal code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code


class RelayUnreachable(NodeError):
    """The relay could not be reached, or the stream to it broke."""


class RelayLink:
    """Requests on one open stream, one at a time (the protocol's turn-taking)."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._client = MailboxClient()
        self.did: str | None = None  # what the relay knows us as, after `introduce`

    async def introduce(self, credentials: Credentials) -> str:
        answer = await self._ask(
            self._client.introduce(
                credentials.certificate, credentials.chain, credentials.rotations
            )
        )
        assert isinstance(answer, Introduced)
        self.did = answer.did
        return answer.did

    async def register(self, registration: RelayRegistration) -> None:
        await self._ask(self._client.register(registration))

    async def unregister(self, recipient_did: str) -> None:
        await self._ask(self._client.unregister(recipient_did))

    async def deposit(self, envelopes: Sequence[Envelope]) -> dict[str, tuple[str, str] | None]:
        """Deposit `envelopes` (they must fit one Deposit: `fitting_deposit`); for each id,
        None if stored, else the relay's (code, message)."""
        answer = await self._ask(self._client.deposit(envelopes))
        assert isinstance(answer, Stored)
        outcomes: dict[str, tuple[str, str] | None] = dict.fromkeys(answer.ids)
        outcomes.update(
            {envelope_id: (code, message) for envelope_id, code, message in answer.refused}
        )
        return outcomes

    async def deposit_one(self, envelope: Envelope) -> str:
        """Deposit one envelope; `MailboxRefused` if the relay refuses it."""
        refused = (await self.deposit([envelope]))[envelope.id]
        if refused is not None:
            raise MailboxRefused(*refused)
        return envelope.id

    async def list_ids(self, recipient_did: str, after: str | None, limit: int) -> Listed:
        answer = await self._ask(self._client.list_envelopes(recipient_did, after, limit))
        assert isinstance(answer, Listed)
        return answer

    async def fetch(self, ids: Sequence[str]) -> tuple[Envelope, ...]:
        answer = await self._ask(self._client.fetch(ids))
        assert isinstance(answer, Fetched)
        return answer.envelopes

    async def ack(self, ids: Sequence[str]) -> int:
        answer = await self._ask(self._client.ack(ids))
        assert isinstance(answer, Acked)
        return answer.count

    async def _ask(self, frame: bytes) -> Response:
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                await self._stream.write(frame)
                while True:
                    event = self._client.next_event()
                    if not isinstance(event, NeedData):
                        break
                    self._client.receive_data(await read_some(self._stream, MAX_FRAME))
        except trio.TooSlowError as err:
            raise RelayUnreachable(
                f"the relay did not answer within {REQUEST_TIMEOUT_S} s"
            ) from err
        except (StreamError, BaseLibp2pError, OSError) as err:
            raise RelayUnreachable(f"the stream to the relay broke: {err}") from err
        except RemoteProtocolError as err:
            raise RelayUnreachable(f"the relay misbehaved: {err} ({err.code})") from err
        if isinstance(event, MailboxError):
            raise MailboxRefused(event.code, event.message)
        if not isinstance(event, Response):
            raise RelayUnreachable("the relay closed the stream")
        return event


@asynccontextmanager
async def open_link(host: IHost, relay: str, addrs: Sequence[str] = ()) -> AsyncIterator[RelayLink]:
    """A link to `relay` (a peer id), dialled at `addrs` if not connected; closed on exit."""
    peer = ID.from_base58(relay)
    try:
        with trio.fail_after(DIAL_TIMEOUT_S):
            if addrs:
                # Our retry policy is the caller's backoff: clear py-libp2p's 60 s refusal to
                # dial a peer whose addresses failed once (a relay that was restarting).
                host.get_network().unblock_peer(peer)  # type: ignore[attr-defined]
                await host.connect(PeerInfo(peer, [Multiaddr(a) for a in addrs]))
            stream = await host.new_stream(peer, [TProtocol(MAILBOX_PROTOCOL_ID)])
    except trio.TooSlowError as err:
        raise RelayUnreachable(f"relay {relay} did not answer within {DIAL_TIMEOUT_S} s") from err
    except (StreamError, BaseLibp2pError, OSError, ValueError) as err:
        raise RelayUnreachable(f"cannot reach relay {relay}: {err}") from err
    link = RelayLink(stream)
    try:
        yield link
    except BaseException:
        await reset_quietly(stream)
        raise
    await close_quietly(stream)
