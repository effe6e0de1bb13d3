"""The coalescing transport (app/core/http_protocol.py) over a real socket
pair: what the wrapped transport is asked to write, and what the peer reads."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, List, Tuple

import pytest

from app.core.http_protocol import HOLD_LIMIT, CoalescingTransport


class Recording:
    """The real transport, with a record of each write it was given."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: List[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def connected() -> Tuple[CoalescingTransport, Recording, socket.socket]:
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    recording = Recording(transport)  # type: ignore[arg-type]
    peer.settimeout(5)
    return CoalescingTransport(recording, loop), recording, peer  # type: ignore[arg-type]


def read_exactly(peer: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = peer.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


async def test_head_and_body_leave_in_one_write() -> None:
    coalescing, recording, peer = await connected()
    coalescing.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    coalescing.write(b"{}")
    assert recording.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    await asyncio.sleep(0)  # the end-of-iteration flush finds nothing left
    assert len(recording.writes) == 1
    assert await asyncio.to_thread(read_exactly, peer, 40) == recording.writes[0]
    coalescing.close()
    peer.close()


async def test_a_lone_write_goes_out_when_the_loop_iteration_ends() -> None:
    coalescing, recording, peer = await connected()
    coalescing.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert recording.writes == []
    assert coalescing.get_write_buffer_size() == 25
    await asyncio.sleep(0)
    assert recording.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    assert await asyncio.to_thread(read_exactly, peer, 25) == b"HTTP/1.1 100 Continue\r\n\r\n"
    coalescing.close()
    peer.close()


async def test_a_big_write_is_not_copied_and_keeps_its_order() -> None:
    coalescing, recording, peer = await connected()
    big = b"x" * (HOLD_LIMIT + 1)
    coalescing.write(b"head")
    coalescing.write(big)
    assert recording.writes == [b"head", big]
    assert await asyncio.to_thread(read_exactly, peer, len(big) + 4) == b"head" + big
    coalescing.close()
    peer.close()


async def test_close_sends_what_is_held_first() -> None:
    coalescing, _, peer = await connected()
    coalescing.write(b"last words")
    coalescing.close()
    received = await asyncio.to_thread(read_exactly, peer, 64)
    assert received == b"last words"  # then end of stream
    peer.close()


async def test_abort_drops_what_is_held() -> None:
    coalescing, recording, peer = await connected()
    coalescing.write(b"never sent")
    coalescing.abort()
    await asyncio.sleep(0)
    assert recording.writes == []
    assert await asyncio.to_thread(read_exactly, peer, 64) == b""
    peer.close()


@pytest.mark.parametrize("name", ["is_closing", "get_extra_info", "pause_reading", "set_protocol"])
async def test_everything_else_is_the_wrapped_transport(name: str) -> None:
    coalescing, recording, peer = await connected()
    assert getattr(coalescing, name) == getattr(recording.transport, name)
    coalescing.close()
    peer.close()
