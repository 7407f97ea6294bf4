"""Differential privacy: noise, accounting, DP-SGD inside MPC, the budget ledger."""
