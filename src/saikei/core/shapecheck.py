"""PLACEHOLDER: shape checking (sk.chk)."""
