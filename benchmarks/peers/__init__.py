"""Peer workloads, run by the benchmark in their own environments (see README)."""
