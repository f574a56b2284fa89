"""A persistent compilation cache, on by default: compiled programs outlive the process.

Importing saikei points JAX's own persistent compilation cache at a per-user
directory, so that a new process that runs the same program (the same
`generate` on the same model and prompt shape, the same jitted forward pass)
loads the compiled executable from disk instead of running XLA again.

Resolution at import, first match wins:

1. `SAIKEI_COMPILATION_CACHE` is `0`, `off`, `false` or `no`: nothing is changed.
2. The user already chose for JAX (`jax_compilation_cache_dir` is set, by
   `jax.config.update` or the `JAX_COMPILATION_CACHE_DIR` variable, or
   `jax_enable_compilation_cache` is off): nothing is changed.
3. `SAIKEI_COMPILATION_CACHE` names a directory: that directory.
4. Otherwise `$XDG_CACHE_HOME/saikei/jax-compilation-cache`, where
   `XDG_CACHE_HOME` defaults to `~/.cache`.

A directory that cannot be created or written leaves the cache off, with one
warning that names it and the variable to set.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

ENV_VAR = "SAIKEI_COMPILATION_CACHE"
_OFF = ("0", "off", "false", "no")
_DEFAULT = ("", "1", "on", "true", "yes")

# Only programs whose XLA compile takes at least this long are written. Each
# cache hit still costs a file read and a deserialization (5-40 ms on CPU), so
# the eager per-primitive programs (tens of ms) would gain nothing and leave
# thousands of small files, while jitted model calls and `generate` loops
# (seconds) are what a new process waits for. JAX's own default is 1 s.
MIN_COMPILE_TIME_SECS = 0.5

# JAX's defaults for the thresholds: a value still equal to them (and not set
# through JAX's environment variable) is not the user's choice.
_JAX_MIN_COMPILE_TIME_SECS = 1.0
_MIN_COMPILE_TIME_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def _default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative XDG_CACHE_HOME.
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "saikei" / "jax-compilation-cache"


def _ensure_writable(path: Path) -> str | None:
    """Creates `path` if needed; returns why it cannot be used, or None if it can."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"{type(error).__name__}: {error.strerror or error}"
    if not os.access(path, os.W_OK | os.X_OK):
        return "it is not writable"
    return None


def _apply(path: Path | None) -> None:
    jax.config.update("jax_compilation_cache_dir", None if path is None else str(path))
    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    if path is not None and (
        _MIN_COMPILE_TIME_ENV not in os.environ and min_time == _JAX_MIN_COMPILE_TIME_SECS
    ):
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)
    # JAX opens its cache once, at the first compile that uses it; this makes
    # the next compile open the directory chosen now.
    _jax_cache.reset_cache()


def _user_chose_for_jax() -> bool:
    return (
        jax.config.jax_compilation_cache_dir is not None
        or not jax.config.jax_enable_compilation_cache
    )


def enable_at_import() -> None:
    """Turns the cache on as the module docstring describes (called by `import saikei`)."""
    choice = os.environ.get(ENV_VAR, "").strip()
    if choice.lower() in _OFF or _user_chose_for_jax():
        return
    path = _default_dir() if choice.lower() in _DEFAULT else Path(choice).expanduser().absolute()
    problem = _ensure_writable(path)
    if problem is not None:
        warnings.warn(
            f"saikei: the persistent compilation cache stays off because {path} cannot be"
            f" used ({problem}). Set {ENV_VAR} to a writable directory, or to 0 to turn the"
            " cache off without this warning.",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    _apply(path)


def set_compilation_cache(path: str | os.PathLike[str] | None) -> str | None:
    """Chooses the directory where compiled programs are kept between processes.

    saikei turns JAX's persistent compilation cache on when it is imported (in
    `~/.cache/saikei/jax-compilation-cache`, or `$XDG_CACHE_HOME/saikei/...`;
    the environment variable `SAIKEI_COMPILATION_CACHE` chooses another
    directory, or turns it off with `0`). This function changes that for the
    rest of the process: programs compiled after the call are looked up in,
    and written to, `path`. Programs whose XLA compile takes under 0.5 s are
    not written (`jax_persistent_cache_min_compile_time_secs`, unless you set
    it yourself). Programs this process already compiled stay in memory.

    Only trusted users should be able to write to the directory: JAX runs
    what it finds there.

    Args:
      path: The cache directory (created if missing), or None to turn the
        persistent cache off.

    Returns:
      The directory in use before the call (None if the cache was off), so
      that it can be restored with another call.

    Raises:
      OSError: if `path` cannot be created or written.

    Example:
      >>> import tempfile
      >>> import jax
      >>> import saikei
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     previous = saikei.set_compilation_cache(tmp)
      ...     print(jax.config.jax_compilation_cache_dir == tmp)
      ...     saikei.set_compilation_cache(previous) == tmp
      True
      True
    """
    previous = jax.config.jax_compilation_cache_dir
    if path is None:
        _apply(None)
        return previous
    directory = Path(os.fspath(path)).expanduser().absolute()
    problem = _ensure_writable(directory)
    if problem is not None:
        raise OSError(
            f"set_compilation_cache: cannot keep compiled programs in {directory} ({problem})."
            " Pass a writable directory, or None to turn the persistent cache off."
        )
    _apply(directory)
    return previous
