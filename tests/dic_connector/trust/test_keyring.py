"""Envelope encryption: bindings of keys and blobs to node, version and column."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from dic_connector.errors import ConfigError, EncryptionError
from dic_connector.trust.keyring import (
    NodeKeyring,
    SealedBlob,
    WrappedKey,
    load_keyring,
    write_keyring,
)


def test_seal_and_open_are_bound_to_node_version_and_column() -> None:
    ring = NodeKeyring.generate("node-0")
    version = uuid.uuid4()
    key, wrapped = ring.new_version_key(version)
    assert ring.unwrap(wrapped, version) == key
    blob = ring.seal(key, version, "age", b"shares")
    assert ring.open(key, version, "age", blob) == b"shares"
    with pytest.raises(EncryptionError, match="column 'sex'"):
        ring.open(key, version, "sex", blob)
    with pytest.raises(EncryptionError):
        ring.open(key, uuid.uuid4(), "age", blob)
    other_node = NodeKeyring("node-1", ring.keys, ring.active_key_id)
    with pytest.raises(EncryptionError):
        other_node.open(key, version, "age", blob)
    with pytest.raises(EncryptionError):
        other_node.unwrap(wrapped, version)
    with pytest.raises(EncryptionError):
        ring.unwrap(wrapped, uuid.uuid4())
    flipped = SealedBlob(blob.nonce, bytes([blob.ciphertext[0] ^ 1]) + blob.ciphertext[1:])
    with pytest.raises(EncryptionError):
        ring.open(key, version, "age", flipped)


def test_unknown_key_id_and_bad_config_fail_clearly() -> None:
    ring = NodeKeyring.generate("node-0")
    with pytest.raises(EncryptionError, match="key id 'old' is not in"):
        ring.unwrap(WrappedKey("old", bytes(60)), uuid.uuid4())
    with pytest.raises(ConfigError, match="'missing' is not in the keyring"):
        NodeKeyring("node-0", {"k1": bytes(32)}, "missing")
    with pytest.raises(ConfigError, match="must be 32 bytes"):
        NodeKeyring("node-0", {"k1": bytes(16)}, "k1")
    assert "k1" not in repr(ring).replace("active_key_id='k1'", "")


def test_error_messages_never_hold_key_material() -> None:
    ring = NodeKeyring("node-0", {"k1": b"K" * 32}, "k1")
    version = uuid.uuid4()
    _, wrapped = ring.new_version_key(version)
    with pytest.raises(EncryptionError) as info:
        NodeKeyring("node-0", {"k1": b"J" * 32}, "k1").unwrap(wrapped, version)
    assert "KKKK" not in str(info.value) and "JJJJ" not in str(info.value)



def test_keyring_files_are_written_0600_even_over_a_loose_file(tmp_path: Path) -> None:
    fresh, loose = tmp_path / "fresh.json", tmp_path / "loose.json"
    loose.write_text("{}")
    loose.chmod(0o644)
    previous = os.umask(0o022)
    try:
        for path in (fresh, loose):
            write_keyring(path, NodeKeyring.generate("node-0"))
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert load_keyring(path).node_id == "node-0"
    finally:
        os.umask(previous)
