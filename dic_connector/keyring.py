"""The node keyring file: the key-encryption keys that seal share blobs at rest.

A JSON file ``{"node_id": "node-0", "active_key_id": "k2", "keys": {"k1": "<base64>",
"k2": "<base64>"}}`` with 32-byte keys, readable by the node's user only (mode 0600; a file
readable by others is refused, as OpenSSH refuses a private key with loose permissions).
In Kubernetes it is mounted from a Secret. Rotation adds a key and moves ``active_key_id``;
``DatasetVersionRepository.rotate_keys`` then rewraps every version key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from pathlib import Path

from .errors import ConfigError
from .store.crypto import KEY_BYTES, NodeKeyring


def write_keyring(path: Path, keyring: NodeKeyring) -> None:
    """Write ``keyring`` to ``path`` with mode 0600 (created that way, never world-readable)."""
    data = {"node_id": keyring.node_id, "active_key_id": keyring.active_key_id,
            "keys": {k: base64.b64encode(v).decode() for k, v in keyring.keys.items()}}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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
