"""Array rendering API for sk.ts (being filled by the arrays work this session)."""
