"""PLACEHOLDER: named axes (sk.nx)."""
