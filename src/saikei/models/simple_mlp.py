"""PLACEHOLDER: replaced this session."""
