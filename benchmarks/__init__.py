"""Benchmarks: programs, not tests. ``python -m benchmarks.run [--only NAME]``.

Each benchmark compares our path with the plain alternative in one run and returns its
metrics; nothing imports this package.
"""
