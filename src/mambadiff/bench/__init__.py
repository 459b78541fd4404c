"""Benchmarks that print a table and write JSON: scan, layers, synthetic, classify."""
