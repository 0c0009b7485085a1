"""Pieces of the Redis bulk loader that stand alone: value bytes and replies."""

from __future__ import annotations

import math
import socket
import threading

import pyarrow as pa
import pytest

from features.errors import ConfigurationError
from features.online_writer import _bulk, _double_pieces, _ReplyCounter

FIELD = _bulk(b"field")


def feast_bytes(values: list) -> list[bytes]:
    """Feast's own serialised value messages for doubles."""
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    protos = python_values_to_proto_values(values, ValueType.DOUBLE)
    return [proto.SerializeToString() for proto in protos]


def test_double_pieces_are_the_messages_feast_writes():
    values = [1.5, None, math.nan, -0.0, 0.0, 1e300, -2.25, math.inf, 7.0]
    pieces = _double_pieces(FIELD, pa.chunked_array([pa.array(values, pa.float64())]))
    expected = [FIELD + _bulk(raw) for raw in feast_bytes(values)]
    assert list(pieces) == expected


class _Connection:
    """The one attribute the reply counter reads: a connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock


def serve_replies(
    peer: socket.socket, replies: list[bytes], size: int = 3
) -> threading.Thread:
    """Answer with ``replies`` cut into pieces of ``size`` bytes after a request."""

    def answer() -> None:
        peer.recv(1 << 16)
        data = b"".join(replies)
        for start in range(0, len(data), size):
            peer.sendall(data[start : start + size])

    thread = threading.Thread(target=answer)
    thread.start()
    return thread


@pytest.mark.parametrize("size", [1, 2, 3, 1000])
def test_reply_counter_waits_for_every_reply_cut_anywhere(size):
    ours, peer = socket.socketpair()
    with ours, peer:
        thread = serve_replies(peer, [b":12\r\n", b":0\r\n"] * 20, size)
        assert _ReplyCounter(_Connection(ours)).send(b"commands", 40, 20) == 20
        thread.join()


def test_reply_counter_stops_on_an_error_reply_and_quotes_it():
    ours, peer = socket.socketpair()
    with ours, peer:
        replies = [b":1\r\n", b"-OOM command not allowed\r\n", b":1\r\n"]
        thread = serve_replies(peer, replies)
        with pytest.raises(ConfigurationError, match="OOM command not allowed"):
            _ReplyCounter(_Connection(ours)).send(b"commands", 3, 3)
        thread.join()
