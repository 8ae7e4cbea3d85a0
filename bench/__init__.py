"""Benchmarks: run by hand or by `make bench`, never as timed assertions in the tests.

Each prints its figures as one JSON object on stdout. `python -m bench` runs the quick
ones; `python -m bench NAME [args]` runs one.
"""
