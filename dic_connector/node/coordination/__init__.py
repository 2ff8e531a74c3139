"""Coordination of the three nodes: no node computes alone, each verifies on its own.

A request is accepted by any node and replicated to the other two with the researcher's
signature; data owners' signed approvals and policies travel the same way. Before anything is
computed, node 0 (the coordinator: every computation needs all three nodes anyway, so a fixed
coordinator costs no availability) proposes a *plan* (which committed dataset version of each
dataset, which minimum cell count); each node checks the plan against its *own* database and
keys, and only when all three agree do they start the MPC session together. A node that is
down or disagrees makes the request wait with a status that names it, then fail after
``coordination_timeout_s``; never run with two. Independent requests run at the same time
(up to ``max_concurrent_computations``; one ledger scope at a time, :mod:`.coordinator`).

Modules in dependency order (lower layers never import higher ones):

- ``verify``        the checks every node applies independently (signatures, approvals,
                    policies, disclosure threshold, dataset versions, analysis parameters)
- ``peers``         the mutual-TLS client for the other nodes' peer API
- ``recovery``      upload versions in doubt (voted ready, outcome never received): ask the
                    peers, commit if any committed, abort if all aborted
- ``cellkeys``      the pairwise secrets of the cell-key record keys: static ECDH of the
                    node's TLS key and a peer's verified certificate
- ``exchange``      the periodic exchange of audit chain heads: ask each peer whether its
                    log still holds the head recorded here (truncation, rewrite)
- ``computation``   load the pinned shares, run the analysis with the two peers, store the
                    opened result
- ``replication``   deliver the transactional outbox to the peers, each message on its own:
                    bounded retries with backoff, then parked (dead letters)
- ``coordinator``   the agreement (prepare, start) on node 0, concurrent starts under
                    the compute semaphore and ledger scopes, and the followers' watch
"""
