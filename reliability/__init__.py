"""Reliability checks of the extension server: a soak under faults, and fuzzing."""
