"""Plumbing of bioknow.py that a reader of the paper may skip (support/plumbing.py)."""
