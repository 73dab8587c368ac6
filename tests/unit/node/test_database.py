"""The trio side of the database: one writer thread, reader threads, a loop that never blocks."""

import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import peewee
import pytest
import trio
import trio.testing

from node.database import READER_THREADS, Database
from store.errors import SchemaTooNew
from store.migrations import SCHEMA_VERSION
from store.peers import list_peers, record_peer_seen

# A guard against a hang if the code under test is broken, never a timing being tested.
HANG_GUARD_S = 10


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    async with await Database.open(tmp_path / "vault.db") as database:
        yield database


def database_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vivim-db-")]


def current_thread(db: peewee.SqliteDatabase) -> int:
    return threading.get_ident()


async def test_writes_run_one_at_a_time_on_one_thread(database: Database) -> None:
    lock = threading.Lock()
    running = 0
    most_running = 0
    threads: set[int] = set()

    def write(db: peewee.SqliteDatabase, n: int) -> None:
        nonlocal running, most_running
        with lock:
            running += 1
            most_running = max(most_running, running)
            threads.add(threading.get_ident())
        record_peer_seen(db, f"peer-{n}", [], n)
        with lock:
            running -= 1

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(database.write, write, n)

    assert len(threads) == 1
    assert threading.get_ident() not in threads
    assert most_running == 1
    assert len(await database.read(list_peers)) == 20


async def test_reads_run_on_reader_threads_not_the_writer(database: Database) -> None:
    writer = await database.write(current_thread)
    readers: set[int] = set()

    async def read() -> None:
        readers.add(await database.read(current_thread))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(read)

    assert writer not in readers
    assert threading.get_ident() not in readers
    assert 1 <= len(readers) <= READER_THREADS


async def test_many_tasks_read_and_write_concurrently(database: Database) -> None:
    seen: list[int] = []

    async def visit(n: int) -> None:
        await database.write(record_peer_seen, f"peer-{n}", [f"/ip4/192.0.2.{n}/tcp/1"], n)
        peers = await database.read(list_peers)
        assert f"peer-{n}" in {peer.peer_id for peer in peers}  # a read sees committed writes
        seen.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(visit, n)

    assert sorted(seen) == list(range(50))
    assert len(await database.read(list_peers)) == 50


async def test_the_event_loop_runs_while_a_write_blocks(database: Database) -> None:
    token = trio.lowlevel.current_trio_token()
    write_started = trio.Event()
    release = threading.Event()
    ticks = 0

    def slow_write(db: peewee.SqliteDatabase) -> bool:
        trio.from_thread.run_sync(write_started.set, trio_token=token)
        # Only returns once the trio task below has ticked, which it can only do if the loop runs
        # while this thread is busy.
        return release.wait(timeout=HANG_GUARD_S)

    async def ticker() -> None:
        nonlocal ticks
        await write_started.wait()
        for _ in range(10):
            await trio.lowlevel.checkpoint()
            ticks += 1
        release.set()

    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            released = await database.write(slow_write)

    assert released
    assert ticks == 10


async def test_a_write_that_raises_is_rolled_back(database: Database) -> None:
    def half_done(db: peewee.SqliteDatabase) -> None:
        record_peer_seen(db, "peer-a", [], 1)
        raise RuntimeError("bug after the first statement")

    with pytest.raises(RuntimeError, match="bug after"):
        await database.write(half_done)

    assert await database.read(list_peers) == []


async def test_a_read_cannot_write(database: Database) -> None:
    with pytest.raises(peewee.OperationalError, match="readonly"):
        await database.read(record_peer_seen, "peer-a", [], 1)
    assert await database.read(list_peers) == []


async def test_a_write_cancelled_while_queued_never_runs(database: Database) -> None:
    release = threading.Event()
    ran: list[str] = []

    def blocking(db: peewee.SqliteDatabase) -> bool:
        return release.wait(timeout=HANG_GUARD_S)

    def queued(db: peewee.SqliteDatabase) -> None:
        ran.append("queued")

    queued_scope = trio.CancelScope()

    async def write_queued() -> None:
        with queued_scope:
            await database.write(queued)

    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(database.write, blocking)
            await trio.testing.wait_all_tasks_blocked()  # `blocking` holds the writer
            nursery.start_soon(write_queued)
            await trio.testing.wait_all_tasks_blocked()  # `queued` waits behind it
            queued_scope.cancel()
            release.set()
        # Queued after `queued`, so this returning means the writer has passed it.
        assert await database.write(current_thread)

    assert queued_scope.cancelled_caught
    assert ran == []


async def test_a_write_cancelled_while_running_completes_then_cancels(
    database: Database,
) -> None:
    token = trio.lowlevel.current_trio_token()
    result = None

    with trio.CancelScope() as scope:

        def cancelled_midway(db: peewee.SqliteDatabase) -> str:
            trio.from_thread.run_sync(scope.cancel, trio_token=token)
            record_peer_seen(db, "peer-a", [], 1)
            return "committed"

        result = await database.write(cancelled_midway)
        await trio.lowlevel.checkpoint()  # where the cancellation is delivered
        pytest.fail("the cancellation was lost")

    assert scope.cancelled_caught
    assert result == "committed"
    assert [peer.peer_id for peer in await database.read(list_peers)] == ["peer-a"]


async def test_aclose_closes_every_connection_and_stops_the_threads(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    database = await Database.open(path)
    await database.write(record_peer_seen, "peer-a", ["/ip4/192.0.2.1/tcp/1"], 1)
    async with trio.open_nursery() as nursery:  # open a connection on each reader thread
        for _ in range(10):
            nursery.start_soon(database.read, list_peers)

    await database.aclose()

    assert database_threads() == []
    # SQLite removes the WAL file when the last connection to the database closes.
    assert not path.with_name(path.name + "-wal").exists()
    with pytest.raises(trio.ClosedResourceError):
        await database.write(record_peer_seen, "peer-b", [], 2)
    with pytest.raises(trio.ClosedResourceError):
        await database.read(list_peers)
    await database.aclose()  # idempotent

    async with await Database.open(path) as reopened:
        assert [peer.peer_id for peer in await reopened.read(list_peers)] == ["peer-a"]
    assert database_threads() == []


async def test_aclose_lets_queued_writes_finish(tmp_path: Path) -> None:
    database = await Database.open(tmp_path / "vault.db")
    done: list[int] = []

    async def write(n: int) -> None:
        await database.write(record_peer_seen, f"peer-{n}", [], n)
        done.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(write, n)
        await trio.testing.wait_all_tasks_blocked()
        await database.aclose()

    assert sorted(done) == list(range(10))


async def test_open_refuses_a_newer_schema_and_stops_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()

    with pytest.raises(SchemaTooNew, match="upgrade vivim-node"):
        await Database.open(path)

    assert database_threads() == []
