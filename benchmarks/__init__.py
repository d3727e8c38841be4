"""Benchmarks of fedrec: quality (privacy–utility on real data) and performance."""
