"""Encrypted part streams: padding, chunking, secretstream, ciphertext digests. Sans-I/O.

A part's plaintext is padded (ISO/IEC 7816-4: 0x80 then zeros, as libsodium's `sodium_pad`) to
`padded_length(len)`, a PADMÉ bucket, so a part's size leaks only O(log log n) bits. The padded
plaintext is cut into 1 MiB chunks and encrypted with `crypto_secretstream_xchacha20poly1305`
under the part's own subkey, with `TAG_FINAL` on the last chunk only and `TAG_MESSAGE` on every
other. Every chunk carries the same associated data (header hash and part number), which binds
each chunk to its envelope and its place. The digest over the whole ciphertext is what the
sender signs, so neither the broker nor a co-recipient (who both could hold chunks, and the
latter the key) can substitute ciphertext.

Memory is bounded by one chunk whatever the part's size: `update` returns what is complete,
`finalize` yields the rest lazily.

The ciphertext digest costs about as much as the encryption. A caller with a second core may take
it out of the stream (`detach_digest`) and feed the returned `CiphertextDigest` every ciphertext
chunk, in stream order, from another thread while the stream works on the next chunk (libsodium
releases the GIL). The stream then uses that digest only once it is closed over exactly the
part's ciphertext length; anything else fails closed.
"""

from __future__ import annotations

from collections.abc import Iterator

import nacl.bindings as sodium
import nacl.exceptions
import nacl.hashlib

from protocol.errors import DecryptionFailed, MalformedInput
from protocol.primitives import HASH_BYTES, equal

CHUNK_BYTES = 1 << 20
ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
STREAM_HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
MIN_PADDED = 256
MAX_PADDED = 1 << 40
DIGEST_LABEL = b"cb-part-ct-v1"


def padded_length(length: int) -> int:
    """PADMÉ bucket (Nikitin et al., PETS 2019) of `length + 1`, at least 256 bytes."""
    if length < 0:
        raise ValueError("negative length")
    n = max(length + 1, MIN_PADDED)
    e = n.bit_length() - 1
    s = e.bit_length()
    mask = (1 << (e - s)) - 1
    return (n + mask) & ~mask


def chunk_count(padded: int) -> int:
    return -(-padded // CHUNK_BYTES)


def ciphertext_length(padded: int) -> int:
    return padded + ABYTES * chunk_count(padded)


def part_digest() -> nacl.hashlib.blake2b:
    return nacl.hashlib.blake2b(digest_size=HASH_BYTES, person=DIGEST_LABEL)


class CiphertextDigest:
    """BLAKE2b-256 (`DIGEST_LABEL`) over one part's ciphertext, fed in stream order.

    Not thread-safe in itself: one thread feeds it, and the stream reads it only after `close`.
    """

    def __init__(self) -> None:
        self._hash = part_digest()
        self.length = 0
        self.value: bytes | None = None

    def update(self, data: bytes) -> None:
        if self.value is not None:
            raise ValueError("digest already closed")
        self._hash.update(data)
        self.length += len(data)

    def close(self) -> bytes:
        if self.value is None:
            self.value = self._hash.digest()
        return self.value


def _state(key: bytes, header: bytes) -> sodium.crypto_secretstream_xchacha20poly1305_state:
    """Secretstream state for a chosen header: libsodium's init_pull derives the same state as
    init_push (HChaCha20 subkey and nonce from the header), so the header can come from the
    caller's random source and vectors can be regenerated. A test holds the two identical."""
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
    return state


class PartEncryptor:
    """Encrypts one part of known plaintext length."""

    def __init__(self, key: bytes, stream_header: bytes, ad: bytes, length: int) -> None:
        self._state = _state(key, stream_header)
        self._ad = ad
        self.length = length
        self.padded = padded_length(length)
        self._chunks_left = chunk_count(self.padded)
        self._buffer = bytearray()
        self._fed = 0
        self._digest = part_digest()
        self._detached: CiphertextDigest | None = None
        self._own_digest: bytes | None = None
        self._finalized = False
        self.ciphertext_length = 0

    @property
    def digest(self) -> bytes | None:
        """The ciphertext digest, once the part is finalized (and a detached digest closed over
        exactly this part's ciphertext); None until then."""
        if not self._finalized:
            return None
        if self._detached is None:
            return self._own_digest
        detached = self._detached
        if detached.value is None or detached.length != self.ciphertext_length:
            return None
        return detached.value

    def detach_digest(self) -> CiphertextDigest:
        """Leave the ciphertext digest to the caller, who must feed it every chunk this stream
        returns, in order, and close it before the part's digest is read."""
        if self._detached is not None or self._chunks_left != chunk_count(self.padded):
            raise ValueError("detach the digest once, before the first chunk")
        self._detached = CiphertextDigest()
        return self._detached

    def _emit(self, chunk: bytes, final: bool) -> bytes:
        tag = TAG_FINAL if final else TAG_MESSAGE
        ct: bytes = sodium.crypto_secretstream_xchacha20poly1305_push(self._state, chunk, self._ad, tag)
        if self._detached is None:
            self._digest.update(ct)
        self.ciphertext_length += len(ct)
        self._chunks_left -= 1
        return ct

    def update(self, data: bytes) -> list[bytes]:
        """Feed plaintext; returns the ciphertext chunks completed by it (possibly none)."""
        if self._finalized:
            raise ValueError("part already finalized")
        self._fed += len(data)
        if self._fed > self.length:
            raise ValueError(f"more plaintext than the declared {self.length} bytes")
        out: list[bytes] = []
        view = memoryview(data)
        while len(view):
            if not self._buffer and len(view) >= CHUNK_BYTES and self._chunks_left > 1:
                # A whole chunk that is not the last one is encrypted without being staged.
                whole = data if len(view) == len(data) == CHUNK_BYTES and type(data) is bytes else None
                out.append(self._emit(whole or bytes(view[:CHUNK_BYTES]), final=False))
                view = view[CHUNK_BYTES:]
                continue
            # Keep back a full last chunk: it may be the final one and take TAG_FINAL.
            room = CHUNK_BYTES - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            # The last chunk always holds at least the padding marker, so a full buffer is
            # never the final chunk.
            if len(self._buffer) == CHUNK_BYTES and self._chunks_left > 1:
                out.append(self._emit(bytes(self._buffer), final=False))
                self._buffer.clear()
        return out

    def finalize(self) -> Iterator[bytes]:
        """Pad and yield the remaining ciphertext chunks; the last carries TAG_FINAL."""
        if self._fed != self.length:
            raise ValueError(f"got {self._fed} plaintext bytes, declared {self.length}")
        pad_left = self.padded - self.length
        marker = True
        while self._chunks_left:
            room = CHUNK_BYTES - len(self._buffer)
            take = min(room, pad_left)
            if take:
                if marker:
                    self._buffer += b"\x80"
                    self._buffer += bytes(take - 1)
                    marker = False
                else:
                    self._buffer += bytes(take)
                pad_left -= take
            final = self._chunks_left == 1
            if not final and len(self._buffer) < CHUNK_BYTES:
                raise AssertionError("unreachable: non-final chunk short")
            yield self._emit(bytes(self._buffer), final=final)
            self._buffer.clear()
        self._own_digest = None if self._detached is not None else self._digest.digest()
        self._finalized = True


class PartVerifier:
    """Checks a part's ciphertext length and digest without any key (what the broker runs)."""

    def __init__(self, expected_length: int, expected_digest: bytes) -> None:
        self._expected_length = expected_length
        self._expected_digest = expected_digest
        self._digest = part_digest()
        self.received = 0

    def update(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self._expected_length:
            raise MalformedInput(reason="part longer than its header says")
        self._digest.update(data)

    def finish(self) -> None:
        if self.received != self._expected_length:
            raise MalformedInput(
                reason=f"part has {self.received} bytes, header says {self._expected_length}"
            )
        if not equal(self._digest.digest(), self._expected_digest):
            raise MalformedInput(reason="part digest does not match the signed header")


class PartDecryptor:
    """Decrypts one part. Plaintext returned before `finalize` is quarantined: the caller must
    not release it until `finalize` (and every other part's) has passed."""

    def __init__(
        self,
        key: bytes,
        stream_header: bytes,
        ad: bytes,
        padded: int,
        digest: bytes,
        length: int | None,
    ) -> None:
        self._state = _state(key, stream_header)
        self._ad = ad
        self._padded = padded
        self._length = length
        self._expected_digest = digest
        self._digest = part_digest()
        self._chunks_left = chunk_count(padded)
        self._buffer = bytearray()
        self._plain_seen = 0
        self._pad_seen = 0  # padding bytes seen so far (only when the length is known)
        self._pad_ok = True
        self._held = bytearray()  # whole padded plaintext (only when the length is unknown)
        self._done = False
        self._detached: CiphertextDigest | None = None

    def detach_digest(self) -> CiphertextDigest:
        """Leave the ciphertext digest to the caller, who must feed it every chunk given to
        `update`, in order, and close it before `finalize`, which fails closed otherwise."""
        if self._detached is not None or self._chunks_left != chunk_count(self._padded) or self._buffer:
            raise ValueError("detach the digest once, before the first chunk")
        self._detached = CiphertextDigest()
        return self._detached

    def _chunk_size(self) -> int:
        if self._chunks_left == 1:
            return self._padded - (chunk_count(self._padded) - 1) * CHUNK_BYTES + ABYTES
        return CHUNK_BYTES + ABYTES

    def _pull(self, ct: bytes) -> bytes:
        if self._detached is None:
            self._digest.update(ct)
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(self._state, ct, self._ad)
        except (nacl.exceptions.CryptoError, ValueError) as e:
            raise DecryptionFailed(reason="chunk failed authentication") from e
        self._chunks_left -= 1
        expected = TAG_FINAL if self._chunks_left == 0 else TAG_MESSAGE
        if tag != expected:
            raise DecryptionFailed(reason=f"chunk tag {tag}, expected {expected}")
        return bytes(plain)

    def _release(self, plain: bytes) -> bytes:
        if self._length is None:
            self._held += plain
            return b""
        keep = max(0, min(len(plain), self._length - self._plain_seen))
        self._plain_seen += len(plain)
        padding = plain[keep:]
        if padding:
            if self._pad_seen == 0:
                self._pad_ok = padding[0] == 0x80
                padding = padding[1:]
            # Compared with zeros in C: iterating over a megabyte of padding in Python is slow.
            self._pad_ok = self._pad_ok and padding == bytes(len(padding))
            self._pad_seen += len(plain) - keep
        return plain[:keep]

    def update(self, data: bytes) -> list[bytes]:
        """Feed ciphertext; returns (quarantined) plaintext pieces."""
        if self._done:
            raise DecryptionFailed(reason="data after the final chunk")
        out: list[bytes] = []
        view = memoryview(data)
        while len(view):
            if self._chunks_left == 0:
                raise DecryptionFailed(reason="data after the final chunk")
            size = self._chunk_size()
            if not self._buffer and len(view) >= size:
                # A whole chunk is decrypted without being staged.
                whole = data if len(view) == len(data) == size and type(data) is bytes else None
                piece = self._release(self._pull(whole or bytes(view[:size])))
                view = view[size:]
                if piece:
                    out.append(piece)
                continue
            need = size - len(self._buffer)
            self._buffer += view[:need]
            view = view[need:]
            if len(self._buffer) == self._chunk_size():
                piece = self._release(self._pull(bytes(self._buffer)))
                self._buffer.clear()
                if piece:
                    out.append(piece)
        return out

    def finalize(self) -> bytes:
        """Check the stream ended exactly at TAG_FINAL, the digest and the padding.

        Returns the whole plaintext when the length was not known in advance (part 0), else b"".
        """
        if self._chunks_left != 0 or self._buffer:
            raise DecryptionFailed(reason="stream truncated before its final chunk")
        if self._detached is None:
            got = self._digest.digest()
        else:
            detached = self._detached
            if detached.value is None or detached.length != ciphertext_length(self._padded):
                raise DecryptionFailed(reason="detached ciphertext digest incomplete")
            got = detached.value
        if not equal(got, self._expected_digest):
            raise DecryptionFailed(reason="ciphertext digest does not match the signed header")
        self._done = True
        if self._length is None:
            body = bytes(self._held).rstrip(b"\x00")
            if not body.endswith(b"\x80") or padded_length(len(body) - 1) != self._padded:
                raise DecryptionFailed(reason="bad padding")
            return body[:-1]
        if self._padded != padded_length(self._length) or not self._pad_ok or self._pad_seen == 0:
            raise DecryptionFailed(reason="bad padding")
        return b""
