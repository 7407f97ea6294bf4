"""Transports: how party processes exchange arrays (in-process queues or TCP sockets)."""
