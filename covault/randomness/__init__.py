"""Cryptographic randomness: PRGs, correlated-randomness providers, pseudo-random secret sharing."""
