"""Benchmarks: scripts that print figures against a target. Not tests (see benchmarks/README.md)."""
