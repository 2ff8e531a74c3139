"""The trust primitives both deployables and the client rely on.

What is signed, hashed and sealed, and how: nothing here knows a node, a connector or a
database, so the client that signs a request and the node that verifies it use one code.

Modules, in dependency order:

- ``canonical``    RFC 8785 canonical JSON (the bytes that are hashed and signed)
- ``signing``      Ed25519 (RFC 8032): key files, public keys in every usual form, signed
                   API bodies, verification
- ``payloads``     the signed payload types (analysis request, approval, policy): built by
                   clients, parsed and re-verified by nodes
- ``dataset_ids``  the dataset id every node and the connector derive alike (UUID v5)
- ``keyring``      the node keyring: envelope encryption at rest (AES-256-GCM) and its file
- ``pki``          the deployment CA and the certificates of nodes and connectors, on disk
"""
