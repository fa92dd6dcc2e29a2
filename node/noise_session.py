"""A faster transport phase for py-libp2p's Noise: the same bytes on the wire, far fewer Python calls.

py-libp2p 0.8.1 runs the Noise handshake well but moves data slowly: every Noise message costs two
socket reads (its 2-byte length, then its body), each through three layers of locks, and a yamux frame
of 64 KiB becomes two messages and two socket writes. On loopback that per-message overhead, not the
cipher, sets the speed of every transfer (``shared/guides/py-libp2p-notes.md``).

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

import trio
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_NOISE_MESSAGE_LEN, MAX_PLAINTEXT_LENGTH, NoiseTransportReadWriter
from libp2p.security.noise.transport import Transport
from libp2p.security.secure_session import SecureSession

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
        self._cipher = bytearray()  # received ciphertext not yet cut into messages
        self._plain = bytearray()  # decrypted bytes not yet returned
        self._write_lock = trio.StrictFIFOLock()  # encrypt and send in the same order

    async def _next_message(self) -> bytes | None:
        """Decrypt the next Noise message; None at a clean end of the connection."""
        cipher = self._cipher
        while True:
            if len(cipher) >= LENGTH_SIZE:
                length = int.from_bytes(cipher[:LENGTH_SIZE], "big")
                end = LENGTH_SIZE + length
                if len(cipher) >= end:
                    message = bytes(cipher[LENGTH_SIZE:end])
                    del cipher[:end]
                    plain: bytes = self._noise.decrypt(message)  # raises on a forged or damaged one
                    return plain
            data = await self._raw.read(RECV_SIZE)
            if not data:
                if cipher:
                    raise ConnectionClosedError("Connection closed in the middle of a Noise message")
                return None
            cipher += data

    async def read(self, n: int | None = None) -> bytes:
        if n == 0:
            return b""
        plain = self._plain
        if n is None:
            if plain:
                data = bytes(plain)
                plain.clear()
                return data
            while not (message := await self._next_message()):  # an empty message is no data
                if message is None:
                    raise ConnectionClosedError("Connection closed")
            return message
        while len(plain) < n:
            message = await self._next_message()
            if message is None:
                if plain:  # a partial read at the end, as SecureSession returns it
                    break
                raise ConnectionClosedError("Connection closed")
            plain += message
        data = bytes(plain[:n])
        del plain[:n]
        return data

    async def write(self, data: bytes) -> None:
        async with self._write_lock:
            parts = []
            for start in range(0, max(len(data), 1), MAX_PLAINTEXT_LENGTH):
                message = self._noise.encrypt(bytes(data[start : start + MAX_PLAINTEXT_LENGTH]))
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
