"""Benchmarks of exprun itself: its figures against the brokers' native tools (`python -m
benchmarks.harness`)."""
