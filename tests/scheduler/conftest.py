"""Fixtures for the scheduler's tests: the DCC's DUIS reference (tests/duis_reference.py)."""

from tests.duis_reference import duis_ref  # noqa: F401  (a fixture, used by name)
