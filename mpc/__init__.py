"""mpc: a vectorised 3-party secure computation engine (replicated secret sharing over Z_2^64).

Honest majority, passive (semi-honest) security, three parties, as in Araki, Furukawa,
Lindell, Nof, Ohara, "High-Throughput Semi-Honest Secure Three-Party Computation with an
Honest Majority", CCS 2016, and Mohassel, Rindal, "ABY3", CCS 2018.

Modules, in dependency order (each imports only those above it):

- ``errors``       the engine's error hierarchy
- ``ring``         Z_2^64 arithmetic on numpy uint64 arrays, fixed-point encoding
- ``prg``          AES-256-CTR pseudo-random generator with disjoint counter ranges
- ``sharing``      replicated additive sharing: share, reconstruct, a party's local view
- ``randomness``   per-session key agreement (X25519, HKDF); pairwise and common AES-CTR
                   PRGs, zero-sharings, correlated randomness
- ``tls``          deployment CA, node certificates, mutual-TLS contexts
- ``channels``     framed peer channels: in-process loopback and mutual TLS over TCP, one
                   listener per party routing each session's connections by session id
- ``mux``          persistent channels: one mutual-TLS connection per peer pair carrying
                   every session's frames (chunked, round-robin), the node's channel pool
- ``session``      ``Party`` (identity + channels) and ``Session`` (one computation)
- ``protocols``    arithmetic (``arith``) and, on top, non-linear protocols
- ``local``        three parties on one machine: throwaway PKI, loopback addresses

This package imports nothing from ``dic_connector``.
"""

from __future__ import annotations

__version__ = "0.1.0"
