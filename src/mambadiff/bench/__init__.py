"""Benchmark logic: scan, layers, synthetic, classify, denoiser, quality. Each module's ``run_*`` takes
plain arguments and returns its records (also printed as a table and written as JSON when asked); the
`mambadiff bench` commands that call them live in ``mambadiff.commands.bench``."""
