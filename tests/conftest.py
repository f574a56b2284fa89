"""Shared pytest configuration: hypothesis profiles, no persistent compilation cache.

Profiles (pick one with HYPOTHESIS_PROFILE=name; CI=true selects "ci"):

- "dev" (default): modest example counts, no deadline (JAX traces and
  compiles on first use, so wall-clock deadlines only measure the compiler).
- "ci": the same, derandomized so a CI failure reproduces on any machine.
- "thorough": more examples, for a local soak before a release.

saikei's persistent compilation cache (on by default at `import saikei`) is off in
the suite unless SAIKEI_COMPILATION_CACHE is set: tests neither write into the
user's ~/.cache nor run faster or differently on a warm cache.
tests/test_compilation_cache.py turns it on in subprocesses of its own.
"""

import os

from hypothesis import HealthCheck, settings

# Set before any test module (or doctest) imports saikei.
os.environ.setdefault("SAIKEI_COMPILATION_CACHE", "0")

_COMMON = {
    "deadline": None,
    # Building NamedArrays or Structs inside strategies can be slow on a shared
    # 2-core machine; that is not a property of the code under test.
    "suppress_health_check": [HealthCheck.too_slow],
}

settings.register_profile("dev", max_examples=30, **_COMMON)
settings.register_profile("ci", max_examples=30, derandomize=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=300, **_COMMON)

_is_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if _is_ci else "dev"))
