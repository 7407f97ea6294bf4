"""Client keys: X25519 key pairs, key agreement through HKDF-SHA256, AES-256-GCM for shares.

Each client of a round draws two X25519 key pairs (``cryptography``, keys from the OS CSPRNG):
``c`` encrypts the Shamir shares it sends to a neighbour through the server, ``s`` derives the
pairwise mask seeds (Bonawitz et al., CCS 2017, section 4; Bell et al., CCS 2020). A shared
secret ``X25519(sk_u, pk_v)`` goes through HKDF-SHA256 with a label, the public round id and
both client ids, so every key and seed is bound to one purpose, one round and one pair. Cost:
two 32-byte public keys per client, one X25519 exchange per neighbour and key pair.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from covault.fl.errors import SecAggError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
MASK_LABEL = b"covault secagg+ pairwise mask"
SHARE_LABEL = b"covault secagg+ share encryption"


class KeyPair:
    """One X25519 key pair; the private key leaves only as raw bytes (to be Shamir-shared)."""

    def __init__(self, private: X25519PrivateKey | None = None):
        self.private = private or X25519PrivateKey.generate()
        self.public = public_bytes(self.private.public_key())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def derive(self, peer_public: bytes, label: bytes, round_id: bytes, u: int, v: int, length: int) -> bytes:
        """HKDF-SHA256 of ``X25519(self, peer)`` bound to ``label``, the round and the pair
        (ordered, so both ends derive the same key)."""
        try:
            shared = self.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:
            raise SecAggError(f"key agreement of clients {u} and {v}: unusable public key ({exc})") from None
        lo, hi = min(u, v), max(u, v)
        info = label + round_id + struct.pack("<II", lo, hi)
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(shared)


def public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: a random 12-byte nonce, then ciphertext and tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, blob: bytes, aad: bytes, who: str) -> bytes:
    """The plaintext of :func:`encrypt`; SecAggError naming ``who`` if it fails authentication."""
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise SecAggError(f"secure aggregation: the shares from {who} fail authentication") from None
