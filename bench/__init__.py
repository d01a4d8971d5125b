"""Benchmarks: platform throughput next to the bare model, measured in the same run."""
