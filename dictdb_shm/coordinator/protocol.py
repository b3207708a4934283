"""The control channel's wire protocol: msgpack frames over a Unix socket,
authenticated both ways with the database's authkey.

Owns: framing, the challenge-response handshake, and a deadline on every
read and write of both sides.  Must never: know what a request means
(service.py does), or unpickle anything: frames are plain msgpack data.

A frame is a 4-byte big-endian length and that many bytes of msgpack (at
most MAX_FRAME).  One request per connection::

    coordinator -> client   [PROTOCOL, server_nonce]     ([PROTOCOL, None]: busy)
    client -> coordinator   [client_proof, client_nonce, op, args]
    coordinator -> client   [server_proof, "ok", value]  or
                            [server_proof, "error", [error class name, message, hint]]

    client_proof = HMAC-SHA256(authkey, b"client" + server_nonce + client_nonce)
    server_proof = HMAC-SHA256(authkey, b"server" + server_nonce + client_nonce)

The authkey lives in the owner-only catalog header, so a proof shows the peer
could read this database's catalog; the server's proof also tells a client
it reached the coordinator of this very catalog, not a stale one of an
earlier database of that name.  Nonces are fresh per connection, so a
recorded exchange cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import struct
import time
from typing import Any, Callable

import msgpack

PROTOCOL = 1
NONCE_SIZE = 32
MAX_FRAME = 1 << 20
_LENGTH = struct.Struct(">I")


class ChannelError(Exception):
    """The exchange failed; ``reason`` says how, for the caller's message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChannelTimeout(ChannelError):
    pass


class ChannelBusy(ChannelError):
    pass


def _proof(authkey: bytes, role: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(authkey, role + server_nonce + client_nonce, hashlib.sha256).digest()


def send(sock: socket.socket, obj: Any, deadline: float) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    if len(data) > MAX_FRAME:
        raise ChannelError(f"a frame of {len(data)} bytes is over {MAX_FRAME}")
    _settimeout(sock, deadline)
    try:
        sock.sendall(_LENGTH.pack(len(data)) + data)
    except socket.timeout:
        raise ChannelTimeout("the peer did not read") from None
    except OSError as exc:
        raise ChannelError(f"the peer went away ({exc.strerror or exc})") from None


def recv(sock: socket.socket, deadline: float) -> Any:
    (n,) = _LENGTH.unpack(_recv_exactly(sock, _LENGTH.size, deadline))
    if n > MAX_FRAME:
        raise ChannelError(f"the peer sent a frame of {n} bytes, over {MAX_FRAME}")
    try:
        return msgpack.unpackb(_recv_exactly(sock, n, deadline), raw=False,
                               strict_map_key=False)
    except (ValueError, TypeError, msgpack.FormatError, msgpack.StackError):
        raise ChannelError("the peer sent a malformed frame") from None


def _recv_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    chunks = []
    while n:
        _settimeout(sock, deadline)
        try:
            chunk = sock.recv(min(n, 65536))
        except socket.timeout:
            raise ChannelTimeout("the peer did not answer in time") from None
        except OSError as exc:
            raise ChannelError(f"the peer went away ({exc.strerror or exc})") from None
        if not chunk:
            raise ChannelError("the peer closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _settimeout(sock: socket.socket, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ChannelTimeout("the peer did not answer in time")
    sock.settimeout(left)


# ------------------------------------------------------------- coordinator
def serve_one(sock: socket.socket, authkey: bytes,
              handle: Callable[[str, list], tuple[str, Any]], timeout: float) -> str | None:
    """Read one request within ``timeout`` seconds, answer it with
    ``handle(op, args) -> (status, value)``, and return ``op`` (None when the
    peer failed to send an authenticated request)."""
    server_nonce = secrets.token_bytes(NONCE_SIZE)
    deadline = time.monotonic() + timeout
    send(sock, [PROTOCOL, server_nonce], deadline)
    message = recv(sock, deadline)
    if not (isinstance(message, list) and len(message) == 4
            and isinstance(message[0], bytes) and isinstance(message[1], bytes)
            and isinstance(message[2], str) and isinstance(message[3], list)):
        raise ChannelError("the peer sent a request of the wrong shape")
    proof, client_nonce, op, args = message
    if len(client_nonce) != NONCE_SIZE or not hmac.compare_digest(
            proof, _proof(authkey, b"client", server_nonce, client_nonce)):
        raise ChannelError("the peer failed authentication")
    status, value = handle(op, args)
    reply_proof = _proof(authkey, b"server", server_nonce, client_nonce)
    send(sock, [reply_proof, status, value], time.monotonic() + timeout)
    return op


def refuse_busy(sock: socket.socket, timeout: float) -> None:
    try:
        send(sock, [PROTOCOL, None], time.monotonic() + timeout)
    except ChannelError:
        pass


# ------------------------------------------------------------------ client
def ask(sock: socket.socket, authkey: bytes, op: str, args: list, *,
        handshake_timeout: float, reply_timeout: float) -> tuple[str, Any]:
    """Send one request on a connected socket; (status, value) of the reply.
    ChannelTimeout when the coordinator does not greet us within
    ``handshake_timeout`` or answer within ``reply_timeout``."""
    try:
        hello = recv(sock, time.monotonic() + handshake_timeout)
    except ChannelTimeout:
        raise ChannelTimeout(f"did not greet us within {handshake_timeout:.0f} s") from None
    if not (isinstance(hello, list) and len(hello) == 2 and hello[0] == PROTOCOL):
        raise ChannelError(f"the peer speaks another protocol ({hello!r:.60})")
    server_nonce = hello[1]
    if server_nonce is None:
        raise ChannelBusy("the coordinator has too many connections open")
    if not isinstance(server_nonce, bytes) or len(server_nonce) != NONCE_SIZE:
        raise ChannelError("the peer sent a malformed greeting")
    client_nonce = secrets.token_bytes(NONCE_SIZE)
    proof = _proof(authkey, b"client", server_nonce, client_nonce)
    send(sock, [proof, client_nonce, op, list(args)], time.monotonic() + handshake_timeout)
    try:
        reply = recv(sock, time.monotonic() + reply_timeout)
    except ChannelTimeout:
        raise ChannelTimeout(f"did not answer {op!r} within {reply_timeout:.0f} s") from None
    if not (isinstance(reply, list) and len(reply) == 3 and isinstance(reply[0], bytes)):
        raise ChannelError("the peer sent a reply of the wrong shape")
    if not hmac.compare_digest(reply[0], _proof(authkey, b"server", server_nonce,
                                                client_nonce)):
        raise ChannelError("the peer is not the coordinator of this database "
                           "(its reply failed authentication)")
    return reply[1], reply[2]
