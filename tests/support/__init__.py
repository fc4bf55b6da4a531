"""Helpers shared by the tests: builders, stand-ins, readers; tests/conftest.py maps them."""
