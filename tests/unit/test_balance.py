"""Connection balancing between workers (app/core/balance.py), over real
sockets: a worker that holds more connections than another leaves new ones
queued for it, but never longer than MAX_WAIT_SECONDS."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Callable, Iterator, List, Set

import pytest

from app.core import balance
from app.core.balance import FREE, BalancedListener, ConnectionBoard

MINE, OTHER = 0, 1


def test_a_new_board_has_every_slot_free() -> None:
    board = ConnectionBoard(4)
    assert board.size == 4
    assert board.fewest_elsewhere(MINE) is None
    assert balance.free_slot(board, []) == 0


def test_fewest_elsewhere_ignores_own_and_free_slots() -> None:
    board = ConnectionBoard(4)
    board.publish(MINE, 0)
    assert board.fewest_elsewhere(MINE) is None
    board.publish(2, 7)
    board.publish(3, 5)
    assert board.fewest_elsewhere(MINE) == 5
    assert board.fewest_elsewhere(3) == 0
    board.release(3)
    assert board.fewest_elsewhere(MINE) == 7


def test_free_slot_skips_taken_ones() -> None:
    board = ConnectionBoard(3)
    assert balance.free_slot(board, [0, None, 2]) == 1
    assert balance.free_slot(board, [0, 1, 2]) is None


def test_forked_processes_share_the_board() -> None:
    board = ConnectionBoard(2)
    pid = os.fork()
    if pid == 0:  # the child publishes, as a worker does
        board.publish(OTHER, 42)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert board.fewest_elsewhere(MINE) == 42
    assert FREE == -1


# ------------------------------------------------------------------ listener
class _Protocol(asyncio.Protocol):
    """Keeps its worker's live connections in a shared set, as uvicorn's do."""

    def __init__(self, connections: Set[Any]) -> None:
        self.connections = connections

    def connection_made(self, transport: Any) -> None:
        self.connections.add(self)

    def connection_lost(self, exc: Any) -> None:
        self.connections.discard(self)


@pytest.fixture
def server_socket() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock
    sock.close()


@pytest.fixture
def clients(server_socket: socket.socket) -> Iterator[Callable[[int], List[socket.socket]]]:
    opened: List[socket.socket] = []

    def connect(n: int) -> List[socket.socket]:
        # Completes in the kernel's accept queue whether or not anyone accepts.
        new = [socket.create_connection(server_socket.getsockname()) for _ in range(n)]
        opened.extend(new)
        return new

    yield connect
    for sock in opened:
        sock.close()


def _listener(sock: socket.socket, board: ConnectionBoard) -> BalancedListener:
    connections: Set[Any] = set()
    return BalancedListener(
        asyncio.get_running_loop(), lambda: _Protocol(connections), sock, board, MINE
    )


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_alone_it_accepts_everything_and_publishes_what_it_holds(
    server_socket: socket.socket, clients: Callable[[int], List[socket.socket]]
) -> None:
    board = ConnectionBoard(2)
    listener = _listener(server_socket, board)
    try:
        opened = clients(5)
        await _until(lambda: listener.held() == 5)
        board.publish(OTHER, 0)
        # What another worker reads: our 5 (published on accept, and again
        # every PUBLISH_SECONDS so that closed connections show).
        await _until(lambda: board.fewest_elsewhere(OTHER) == 5)
        for sock in opened:
            sock.close()
        await _until(lambda: board.fewest_elsewhere(OTHER) == 0)
    finally:
        listener.close()
        await listener.wait_closed()


async def test_the_busier_worker_leaves_a_connection_to_the_other(
    server_socket: socket.socket,
    clients: Callable[[int], List[socket.socket]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(balance, "MAX_WAIT_SECONDS", 60.0)
    board = ConnectionBoard(2)
    board.publish(OTHER, 0)  # another worker, holding nothing
    listener = _listener(server_socket, board)
    try:
        clients(1)
        await _until(lambda: listener.held() == 1)  # a tie: its turn
        clients(1)
        await asyncio.sleep(0.2)
        assert listener.held() == 1  # left queued: it holds more than the other
        board.publish(OTHER, 3)  # the other took connections: now it is our turn
        await _until(lambda: listener.held() == 2)
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_connection_never_waits_longer_than_max_wait(
    server_socket: socket.socket,
    clients: Callable[[int], List[socket.socket]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(balance, "MAX_WAIT_SECONDS", 0.5)
    board = ConnectionBoard(2)
    board.publish(OTHER, 0)  # a worker that never accepts (stalled)
    listener = _listener(server_socket, board)
    try:
        clients(1)
        await _until(lambda: listener.held() == 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        clients(3)
        await asyncio.sleep(0.1)
        assert listener.held() == 1
        # Overdue: the waiting connections are all taken, not one per wait
        # (which would take 3 x 0.5 s).
        await _until(lambda: listener.held() == 4, timeout=5)
        assert 0.5 <= loop.time() - started < 1.2
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_connection_another_worker_took_does_not_make_the_next_one_overdue(
    server_socket: socket.socket,
    clients: Callable[[int], List[socket.socket]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(balance, "MAX_WAIT_SECONDS", 0.3)
    board = ConnectionBoard(2)
    board.publish(OTHER, 0)
    listener = _listener(server_socket, board)
    taken: List[socket.socket] = []
    try:
        clients(1)
        await _until(lambda: listener.held() == 1)
        clients(1)
        await asyncio.sleep(0.05)  # left queued for the other worker ...

        def other_worker_accepts() -> bool:
            try:
                taken.append(server_socket.accept()[0])
            except BlockingIOError:
                return False
            return True

        await _until(other_worker_accepts)  # ... which takes it (this test)
        await asyncio.sleep(0.5)  # longer than MAX_WAIT_SECONDS
        clients(1)  # a new arrival waits its own MAX_WAIT_SECONDS
        await asyncio.sleep(0.1)
        assert listener.held() == 1
        await _until(lambda: listener.held() == 2)  # then is taken
    finally:
        listener.close()
        await listener.wait_closed()
        for sock in taken:
            sock.close()


async def test_closing_frees_the_slot_and_stops_accepting(
    server_socket: socket.socket, clients: Callable[[int], List[socket.socket]]
) -> None:
    board = ConnectionBoard(2)
    listener = _listener(server_socket, board)
    clients(1)
    await _until(lambda: listener.held() == 1)
    listener.close()
    await listener.wait_closed()
    board.publish(OTHER, 0)
    assert board.fewest_elsewhere(OTHER) is None  # the closed worker is not counted
    clients(1)
    await asyncio.sleep(0.1)
    assert listener.held() == 1


async def test_the_event_loop_balances_only_in_a_worker_that_joined(
    server_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    board = ConnectionBoard(2)
    monkeypatch.setattr(balance, "_assignment", None)

    def in_a_loop_of_its_own() -> None:
        loop = balance.BalancedEventLoop()
        try:
            plain = loop.run_until_complete(
                loop.create_server(asyncio.Protocol, sock=socket.socket(), start_serving=False)
            )
            assert isinstance(plain, asyncio.AbstractServer)  # not joined: asyncio's
            plain.close()
            balance.join(board, OTHER)
            assert board.fewest_elsewhere(MINE) is None  # not listening yet
            balanced = loop.run_until_complete(
                loop.create_server(asyncio.Protocol, sock=server_socket)
            )
            assert isinstance(balanced, BalancedListener)
            assert board.fewest_elsewhere(MINE) == 0  # listening, holding nothing
            balanced.close()
            assert board.fewest_elsewhere(MINE) is None
        finally:
            loop.close()

    await asyncio.get_running_loop().run_in_executor(None, in_a_loop_of_its_own)
