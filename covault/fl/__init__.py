"""Federated learning with secure aggregation (SecAgg+, Bell et al., CCS 2020).

Clients train locally; the aggregator learns only the sum of their clipped, quantised updates
(and which clients dropped out). One module per concept:

- :mod:`~covault.fl.quantise`: clipping and fixed point in Z_2^32 or Z_2^64, the overflow bound;
- :mod:`~covault.fl.shamir`: t-of-k Shamir sharing over the prime field 2^521 - 1;
- :mod:`~covault.fl.keys`: X25519 key pairs, key agreement, HKDF, AES-GCM for shares in transit;
- :mod:`~covault.fl.graph`: the public random k-regular neighbour graph of a round;
- :mod:`~covault.fl.masking`: self and pairwise masks expanded by AES-CTR;
- :mod:`~covault.fl.wire`: the messages as bytes (parsing errors name the client);
- :mod:`~covault.fl.client`, :mod:`~covault.fl.server`: the two roles of one round;
- :mod:`~covault.fl.simulate`: every client of a round as an object in one process (tests,
  benchmark), bytes counted;
- :mod:`~covault.fl.training`, :mod:`~covault.fl.processes`: federated logistic regression with
  one OS process per client over mutual TLS (``covault demo --federated``).

Guarantees and assumptions: ``docs/privacy.md``, "Federated learning with secure aggregation".
"""
