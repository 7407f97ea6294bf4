"""Gradient-inversion attacks: what an aggregator or a compute party can recover from what it sees."""
