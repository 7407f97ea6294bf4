"""Deployment: consortium configuration, certificates, running one party per host."""
