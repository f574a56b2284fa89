"""Reference models built from sk.nn layers."""
