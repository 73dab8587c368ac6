"""The checks of received ops that need no vault (decoding, the signature by the device's key,
the payload rules), as the op-checking processes run them (node/op_checker.py).

A checking process imports this module to run `check_wires`, so it imports only what the checks
need: no SQLite, no peewee, no trio. Sync runs one checking process per core, and each is
~7 MB smaller for it (measured after checking batches of the benchmark's ops: 45 MB resident
when it imported store.sync_state and node.op_checker, 38 MB now).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from protocols.errors import MalformedInput, ProtocolError
from protocols.oplog import SyncOperation, verify_signature
from store.vault_payloads import check_payload

# What a checking process says of one op: None (decodes, signature holds, payload follows the
# rules), or its error's (code, message).
Verdict = tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class CheckedBatch:
    """`check_wires`'s answer: a verdict per op, and per device the highest seq in the batch
    (where the cursor will be once it is applied, so the next pull can go out before) and the
    lowest."""

    verdicts: list[Verdict]
    last_seqs: dict[str, int]
    first_seqs: dict[str, int]


def check_wires(wires: Sequence[bytes]) -> CheckedBatch:
    """The checks of a batch's ops that need no vault: decoding, the signature by the device's
    key, the payload rules. Pure CPU and picklable in and out, so sync runs it in checking
    processes while the node applies the batches before (node/sync.py). A batch with an op that
    does not decode at all is refused whole (`MalformedInput`): nothing says whose it is."""
    verdicts: list[Verdict] = []
    last_seqs: dict[str, int] = {}
    first_seqs: dict[str, int] = {}
    for position, wire in enumerate(wires):
        try:
            op = SyncOperation.from_wire(wire)
        except MalformedInput as err:
            raise MalformedInput(f"op {position} of the batch does not decode: {err}") from err
        last_seqs[op.device] = max(last_seqs.get(op.device, 0), op.seq)
        first_seqs[op.device] = min(first_seqs.get(op.device, op.seq), op.seq)
        try:
            verify_signature(op)
            check_payload(op)
        except ProtocolError as err:
            verdicts.append((err.code, str(err)))
        else:
            verdicts.append(None)
    return CheckedBatch(verdicts=verdicts, last_seqs=last_seqs, first_seqs=first_seqs)
