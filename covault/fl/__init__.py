"""Federated learning with secure aggregation: clients train locally, the aggregator learns only the sum."""
