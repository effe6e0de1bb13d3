"""Even out keep-alive connections between `keel serve` workers.

Why: every worker watches the one listening socket the master bound, the
kernel wakes them all when connections arrive, and the first to run accepts
everything queued. A client that opens its connections in a burst (a proxy's
or load balancer's keep-alive pool, a benchmark) lands mostly on one worker,
for as long as the connections live. Measured with 2 workers and 64
keep-alive connections (wrk): splits from 0/64 to 61/3, and 7,960 req/s
instead of 13,900 when one worker held nearly all of them.

How: the master creates a small board in shared memory before it forks; each
worker has a slot on it and publishes how many connections it holds. A
worker accepts while it holds no more than the least-loaded other worker;
otherwise it stops watching the socket for RECHECK_SECONDS and leaves the
connection to the others. Once a connection has waited MAX_WAIT_SECONDS the
worker accepts anyway, and keeps accepting until the queue is empty, so a
stalled worker delays new connections by that much at most. Only accepting
changes: requests on open connections never wait for this.

Use: `keel serve` (app/gunicorn_conf.py) with the asyncio event loop:
uvicorn's `loop` setting is BalancedEventLoop, whose `create_server` returns
a BalancedListener for the worker's shared socket.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import socket
from typing import Any, Callable, Iterable, Optional, Set, Tuple, cast

logger = logging.getLogger(__name__)

LOOP = "app.core.balance:BalancedEventLoop"
SLOTS = 64
FREE = -1
RECHECK_SECONDS = 0.001
MAX_WAIT_SECONDS = 0.05
# Connections that close are published this often (accepts at once).
PUBLISH_SECONDS = 0.25
# After accept() fails for lack of file descriptors or memory (as asyncio does).
ACCEPT_RETRY_SECONDS = 1.0


class ConnectionBoard:
    """Connections held per worker slot, in memory shared by every process
    forked after it was created. FREE marks a slot no worker holds."""

    def __init__(self, slots: int = SLOTS) -> None:
        # An anonymous mmap is MAP_SHARED: forked workers all see this memory.
        self._memory = mmap.mmap(-1, slots * 8)
        self._counts = memoryview(self._memory).cast("q")
        for slot in range(slots):
            self._counts[slot] = FREE

    @property
    def size(self) -> int:
        return len(self._counts)

    def publish(self, slot: int, held: int) -> None:
        self._counts[slot] = held

    def release(self, slot: int) -> None:
        self._counts[slot] = FREE

    def fewest_elsewhere(self, slot: int) -> Optional[int]:
        """The fewest connections any other worker holds (None: no other)."""
        others = [held for index, held in enumerate(self._counts.tolist()) if index != slot]
        live = [held for held in others if held != FREE]
        return min(live) if live else None


def free_slot(board: ConnectionBoard, taken: Iterable[Optional[int]]) -> Optional[int]:
    """The lowest slot no live worker holds (None: all taken)."""
    held = set(taken)
    return next((slot for slot in range(board.size) if slot not in held), None)


_assignment: Optional[Tuple[ConnectionBoard, int]] = None


def join(board: ConnectionBoard, slot: int) -> None:
    """In a new worker: serve through `slot` of `board`. The slot counts for
    the others once the worker listens (its app may take a while to start)."""
    global _assignment
    _assignment = (board, slot)


class BalancedListener:
    """Accepts from a listening socket shared with other workers, for this
    worker only while it is not the busiest (see the module docstring). Has
    the two methods uvicorn uses of an asyncio.Server: close, wait_closed.

    The connections held are counted from the protocol's `connections`, the
    set of this worker's live connections that uvicorn's protocols share,
    plus those accepted that have no protocol yet."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
        board: ConnectionBoard,
        slot: int,
    ) -> None:
        self._loop = loop
        self._protocol_factory = protocol_factory
        self._sock = sock
        self._board = board
        self._slot = slot
        self._connections: Optional[Set[Any]] = None
        self._connecting: Set[asyncio.Task[None]] = set()
        self._without_protocol = 0
        self._waiting_since: Optional[float] = None
        self._last_deferral = 0.0
        self._watching = False
        self._closed = False
        self._timer: Optional[asyncio.TimerHandle] = None
        sock.setblocking(False)
        board.publish(slot, 0)
        self._publisher = loop.call_later(PUBLISH_SECONDS, self._publish_periodically)
        self._watch()

    def held(self) -> int:
        live = len(self._connections) if self._connections is not None else 0
        return live + self._without_protocol

    def close(self) -> None:
        """Stop accepting; the slot is free for the others' comparisons. (The
        socket belongs to the caller.)"""
        if self._closed:
            return
        self._closed = True
        self._unwatch()
        self._publisher.cancel()
        if self._timer is not None:
            self._timer.cancel()
        self._board.release(self._slot)

    async def wait_closed(self) -> None:
        if self._connecting:
            await asyncio.gather(*self._connecting, return_exceptions=True)

    # ------------------------------------------------------------ accepting
    def _my_turn(self) -> bool:
        fewest = self._board.fewest_elsewhere(self._slot)
        return fewest is None or self.held() <= fewest

    def _on_readable(self) -> None:
        if self._my_turn():
            self._waiting_since = None
        else:
            now = self._loop.time()
            # Not called back for a while: another worker emptied the queue,
            # and what is queued now has just arrived.
            if self._waiting_since is None or now - self._last_deferral > MAX_WAIT_SECONDS:
                self._waiting_since = now
            if now - self._waiting_since < MAX_WAIT_SECONDS:
                self._last_deferral = now
                self._pause(RECHECK_SECONDS)
                return
            # Overdue: accept until the queue is empty (the clock keeps running).
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            self._waiting_since = None  # nothing queued: another worker took it
            return
        except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM
            logger.warning("accept() failed: %r; trying again in %.0f s", exc, ACCEPT_RETRY_SECONDS)
            self._pause(ACCEPT_RETRY_SECONDS)
            return
        conn.setblocking(False)
        self._without_protocol += 1
        task = self._loop.create_task(self._connect(conn))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        self._board.publish(self._slot, self.held())

    async def _connect(self, conn: socket.socket) -> None:
        # Counted twice for one loop iteration: uvicorn's connection_made has
        # put it in `connections` when the await returns. Harmless: a worker
        # that over-counts only leaves a little more to the others.
        try:
            loop = cast(asyncio.BaseEventLoop, self._loop)  # typeshed lists it there for 3.9
            _, protocol = await loop.connect_accepted_socket(self._protocol_factory, conn)
        except OSError as exc:  # the client went away while the transport was set up
            logger.info("connection dropped while it was set up: %r", exc)
            conn.close()
            return
        finally:
            self._without_protocol -= 1
        if self._connections is None:
            self._connections = getattr(protocol, "connections", None)

    # -------------------------------------------------------------- plumbing
    def _watch(self) -> None:
        self._timer = None
        if not self._watching and not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False

    def _pause(self, seconds: float) -> None:
        self._unwatch()
        self._timer = self._loop.call_later(seconds, self._watch)

    def _publish_periodically(self) -> None:
        self._board.publish(self._slot, self.held())
        self._publisher = self._loop.call_later(PUBLISH_SECONDS, self._publish_periodically)


class BalancedEventLoop(asyncio.SelectorEventLoop):
    """asyncio's loop; in a worker that joined a board, a server on an
    existing socket (gunicorn's) is a BalancedListener."""

    async def create_server(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
    ) -> Any:
        sock = kwargs.get("sock")
        if _assignment is None or sock is None or args or kwargs.get("ssl") is not None:
            return await super().create_server(protocol_factory, *args, **kwargs)
        board, slot = _assignment
        return BalancedListener(self, protocol_factory, sock, board, slot)
