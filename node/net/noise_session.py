"""A faster transport phase for py-libp2p's Noise: the same bytes on the wire, far fewer Python calls.

py-libp2p 0.8.1 runs the Noise handshake well but moves data slowly: every Noise message costs two
socket reads (its 2-byte length, then its body), each through three layers of locks, and a yamux frame
of 64 KiB becomes two messages and two socket writes. On loopback that per-message overhead, not the
cipher, sets the speed of every transfer (docs/py-libp2p.md, "Speeds").

``NoiseTransport`` here is py-libp2p's Noise transport with the handshake untouched. Once it is done, the
secure session is swapped for a :class:`BufferedSession` that keeps the same cipher states (and so the
same nonces and the same messages on the wire, as the libp2p Noise spec defines them) but:

- reads the connection in large pieces (up to ``RECV_SIZE``) and cuts Noise messages out of a buffer;
- encrypts all the messages of one write and hands them to the socket in one call.

Every message is still authenticated before a byte of it is returned; a message that fails is a broken
connection, as before. Lengths are bounded by the 2-byte length prefix (65,535 bytes), so the buffers
never hold more than ``RECV_SIZE`` plus one message of ciphertext and what the reader asked for.
"""

from __future__ import annotations

from collections import deque

import trio
from cryptography.exceptions import InvalidTag
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_NOISE_MESSAGE_LEN, MAX_PLAINTEXT_LENGTH, NoiseTransportReadWriter
from libp2p.security.noise.transport import Transport
from libp2p.security.secure_session import SecureSession
from noise.exceptions import NoiseInvalidMessage

RECV_SIZE = 256 * 1024  # bytes asked of each socket read
LENGTH_SIZE = 2  # the Noise message's big-endian length prefix


class BufferedSession(SecureSession):
    """A Noise transport session that batches socket reads and writes (see the module docstring)."""

    def __init__(self, session: SecureSession, transport: NoiseTransportReadWriter) -> None:
        super().__init__(
            local_peer=session.local_peer,
            local_private_key=session.local_private_key,
            remote_peer=session.remote_peer,
            remote_permanent_pubkey=session.remote_permanent_pubkey,
            is_initiator=session.is_initiator,
            conn=transport,
        )
        self._noise = transport.noise_state
        self._raw: IRawConnection = transport.read_writer.read_write_closer  # type: ignore[assignment]
        self._cipher = bytearray()  # received ciphertext
        self._cipher_start = 0  # where its undecrypted part begins
        # the Noise state's ciphers (they count the nonces), called with views of the buffers
        self._decrypt = self._noise.noise_protocol.cipher_state_decrypt.decrypt_with_ad
        self._encrypt = self._noise.noise_protocol.cipher_state_encrypt.encrypt_with_ad
        self._plain: deque[bytes] = deque()  # decrypted messages not yet (wholly) returned
        self._offset = 0  # bytes of self._plain[0] already returned
        self._ready = 0  # bytes in self._plain not yet returned
        self._write_lock = trio.StrictFIFOLock()  # encrypt and send in the same order

    async def _next_message(self) -> bytes | None:
        """Decrypt the next Noise message; None at a clean end of the connection.

        Ciphertext already decrypted stays at the front of ``_cipher`` until the next socket read
        (``_cipher_start`` marks the rest), and is decrypted in place: no copy before the cipher's own."""
        cipher = self._cipher
        while True:
            start = self._cipher_start
            if len(cipher) - start >= LENGTH_SIZE:
                body = start + LENGTH_SIZE
                end = body + int.from_bytes(cipher[start:body], "big")
                if len(cipher) >= end:
                    self._cipher_start = end
                    with memoryview(cipher) as view, view[body:end] as message:
                        try:
                            plain: bytes = self._decrypt(None, message)
                        except InvalidTag:  # a forged or damaged message: the connection is broken
                            raise NoiseInvalidMessage("Failed authentication of message") from None
                    return plain
            del cipher[:start]
            self._cipher_start = 0
            data = await self._raw.read(RECV_SIZE)
            if not data:
                if cipher:
                    raise ConnectionClosedError("Connection closed in the middle of a Noise message")
                return None
            cipher += data

    async def read(self, n: int | None = None) -> bytes:
        if n == 0:
            return b""
        if n is None:
            if self._ready:
                return self._take(self._ready)
            while not (message := await self._next_message()):  # an empty message is no data
                if message is None:
                    raise ConnectionClosedError("Connection closed")
            return message
        while self._ready < n:
            message = await self._next_message()
            if message is None:
                if self._ready:  # a partial read at the end, as SecureSession returns it
                    return self._take(self._ready)
                raise ConnectionClosedError("Connection closed")
            if message:
                self._plain.append(message)
                self._ready += len(message)
        return self._take(n)

    def _take(self, n: int) -> bytes:
        """The next ``n`` decrypted bytes (``n`` <= what is ready), copied once at most."""
        plain, offset = self._plain, self._offset
        first = plain[0]
        if offset == 0 and len(first) == n:
            plain.popleft()
            data = first
        elif len(first) - offset >= n:
            data = first[offset : offset + n]
            self._offset = offset + n
            if self._offset == len(first):
                plain.popleft()
                self._offset = 0
        else:
            parts: list[bytes | memoryview] = [memoryview(first)[offset:]]
            plain.popleft()
            left = n - (len(first) - offset)
            self._offset = 0
            while left:
                chunk = plain[0]
                if len(chunk) <= left:
                    parts.append(plain.popleft())
                    left -= len(chunk)
                else:
                    parts.append(memoryview(chunk)[:left])
                    self._offset = left
                    left = 0
            data = b"".join(parts)
        self._ready -= n
        return data

    async def write(self, data: bytes) -> None:
        async with self._write_lock:
            parts = []
            with memoryview(data) as view:
                for start in range(0, max(len(data), 1), MAX_PLAINTEXT_LENGTH):
                    message: bytes = self._encrypt(None, view[start : start + MAX_PLAINTEXT_LENGTH])
                    parts.append(len(message).to_bytes(LENGTH_SIZE, "big"))
                    parts.append(message)
            await self._raw.write(b"".join(parts))


assert MAX_NOISE_MESSAGE_LEN < 1 << (8 * LENGTH_SIZE)


def _buffered(session: ISecureConn) -> ISecureConn:
    if type(session) is SecureSession and type(session.conn) is NoiseTransportReadWriter:
        return BufferedSession(session, session.conn)
    return session


class NoiseTransport(Transport):
    """py-libp2p's Noise transport whose sessions are :class:`BufferedSession`."""

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        return _buffered(await super().secure_inbound(conn))

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        return _buffered(await super().secure_outbound(conn, peer_id))
