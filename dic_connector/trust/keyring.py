"""The node keyring: envelope encryption of share blobs at rest (AES-256-GCM), and its file.

Each node keeps its share blobs encrypted under keys the database never sees:

- the **node key** (key-encryption key, 32 bytes) lives in the node's configuration, named by a
  *key id*; a :class:`NodeKeyring` holds the active key and any older ones still needed;
- every dataset version gets a fresh random **version key** (data-encryption key), stored only
  wrapped (AES-GCM encrypted) under the active node key, with the key id beside it;
- every blob is sealed under its version key with AES-GCM (NIST SP 800-38D) and a fresh 96-bit
  random nonce.

The associated data binds each ciphertext to its place: ``node id || version id`` for the
wrapped key and ``node id || version id || column`` for a blob (canonical JSON, so no two
places share an encoding). A blob copied to another column, version or node therefore fails
authentication instead of decrypting to the wrong shares.

Why an envelope: rotating the node key rewraps one 60-byte key per version instead of
re-encrypting gigabytes, and deleting a version destroys its wrapped key, so its blobs become
unreadable everywhere a copy may linger (PostgreSQL dead tuples and WAL, SQLite free pages,
backups) — "crypto-shredding" on top of deleting the rows.

**The keyring file** is JSON, ``{"node_id": "node-0", "active_key_id": "k2", "keys": {"k1":
"<base64>", "k2": "<base64>"}}`` with 32-byte keys, readable by the node's user only (mode
0600; a file readable by others is refused, as OpenSSH refuses a private key with loose
permissions). In Kubernetes it is mounted from a Secret. Rotation adds a key and moves
``active_key_id``; ``DatasetVersionRepository.rotate_keys`` then rewraps every version key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dic_connector.errors import ConfigError, EncryptionError
from dic_connector.trust.canonical import canonical_bytes

KEY_BYTES = 32
NONCE_BYTES = 12


def _version_aad(node_id: str, version_id: uuid.UUID) -> bytes:
    return canonical_bytes({"node": node_id, "purpose": "version-key", "version": str(version_id)})


def _blob_aad(node_id: str, version_id: uuid.UUID, column: str) -> bytes:
    return canonical_bytes(
        {"column": column, "node": node_id, "purpose": "share-blob", "version": str(version_id)}
    )


@dataclass(frozen=True)
class WrappedKey:
    """A version key encrypted under the node key ``key_id``: ``nonce || ciphertext``."""

    key_id: str
    blob: bytes


@dataclass(frozen=True)
class SealedBlob:
    """One encrypted share blob: the nonce and the AES-GCM ciphertext (with its 16-byte tag)."""

    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class NodeKeyring:
    """The node's key-encryption keys by key id; ``active_key_id`` wraps new version keys.

    Keys are compared by id only; their bytes never appear in ``repr`` or error messages.
    """

    node_id: str
    keys: Mapping[str, bytes] = field(repr=False)
    active_key_id: str

    def __post_init__(self) -> None:
        if self.active_key_id not in self.keys:
            raise ConfigError(f"Keyring active key id '{self.active_key_id}' is not in the keyring")
        for key_id, key in self.keys.items():
            if len(key) != KEY_BYTES:
                raise ConfigError(f"Keyring key '{key_id}' must be {KEY_BYTES} bytes long")

    @classmethod
    def generate(cls, node_id: str, key_id: str = "k1") -> NodeKeyring:
        """A keyring with one fresh random key (tests, the embedded demo)."""
        return cls(node_id=node_id, keys={key_id: AESGCM.generate_key(bit_length=256)},
                   active_key_id=key_id)

    def _kek(self, key_id: str) -> AESGCM:
        key = self.keys.get(key_id)
        if key is None:
            raise EncryptionError(f"node key id '{key_id}' is not in this node's keyring")
        return AESGCM(key)

    def new_version_key(self, version_id: uuid.UUID) -> tuple[bytes, WrappedKey]:
        """A fresh version key and its wrapping under the active node key."""
        version_key = AESGCM.generate_key(bit_length=256)
        return version_key, self.wrap(version_key, version_id)

    def wrap(self, version_key: bytes, version_id: uuid.UUID) -> WrappedKey:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._kek(self.active_key_id).encrypt(
            nonce, version_key, _version_aad(self.node_id, version_id)
        )
        return WrappedKey(key_id=self.active_key_id, blob=nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, version_id: uuid.UUID) -> bytes:
        """The version key; :class:`EncryptionError` if the key id or binding is wrong."""
        kek = self._kek(wrapped.key_id)
        nonce, sealed = wrapped.blob[:NONCE_BYTES], wrapped.blob[NONCE_BYTES:]
        try:
            return kek.decrypt(nonce, sealed, _version_aad(self.node_id, version_id))
        except InvalidTag as exc:
            raise EncryptionError(
                f"version key of dataset version {version_id} does not decrypt under node key "
                f"'{wrapped.key_id}' (wrong key, or key moved from another version or node)"
            ) from exc

    def seal(self, version_key: bytes, version_id: uuid.UUID, column: str,
             plaintext: bytes) -> SealedBlob:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(version_key).encrypt(
            nonce, plaintext, _blob_aad(self.node_id, version_id, column)
        )
        return SealedBlob(nonce=nonce, ciphertext=ciphertext)

    def open(self, version_key: bytes, version_id: uuid.UUID, column: str,
             blob: SealedBlob) -> bytes:
        try:
            return AESGCM(version_key).decrypt(
                blob.nonce, blob.ciphertext, _blob_aad(self.node_id, version_id, column)
            )
        except InvalidTag as exc:
            raise EncryptionError(
                f"share blob for column '{column}' of dataset version {version_id} does not "
                "authenticate (moved from another column, version or node, or tampered with)"
            ) from exc



def write_keyring(path: Path, keyring: NodeKeyring) -> None:
    """Write ``keyring`` to ``path`` with mode 0600 (created that way, never world-readable)."""
    data = {"node_id": keyring.node_id, "active_key_id": keyring.active_key_id,
            "keys": {k: base64.b64encode(v).decode() for k, v in keyring.keys.items()}}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: set it
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)


def load_keyring(path: Path) -> NodeKeyring:
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"Config 'keyring_file' ({path}) cannot be read: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"Config 'keyring_file' ({path}) is accessible by other users; "
                          "it must be mode 0600")
    try:
        data = json.loads(text)
        keys = {str(k): base64.b64decode(v, validate=True) for k, v in data["keys"].items()}
        node_id, active = str(data["node_id"]), str(data["active_key_id"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise ConfigError(f"Config 'keyring_file' ({path}) is not a keyring: expected "
                          "node_id, active_key_id and base64 keys") from exc
    if any(len(v) != KEY_BYTES for v in keys.values()):
        raise ConfigError(f"Config 'keyring_file' ({path}): every key must be {KEY_BYTES} bytes")
    return NodeKeyring(node_id=node_id, keys=keys, active_key_id=active)
