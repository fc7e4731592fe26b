"""Fault scenarios on the test bed, measured: the use cases (issue 4)."""
