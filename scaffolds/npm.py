"""Scaffold bundles from the npm registry, installed once per version into a host cache.

Agents such as Claude Code, Codex, OpenCode and Cline ship on npm, most with native
binaries in per-platform packages. A bundle is ``npm install --prefix DIR PKG@VERSION``
into ``$XDG_CACHE_HOME/kwaigym/bundles/<name>-<version>``: installed once (concurrent
installers wait on a file lock; a half-done install is never used), then mounted
read-only into any sandbox, so dataset images need nothing installed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from kwaigym.errors import HostSetupError

_DONE = ".kwaigym-complete"


def bundle_cache() -> Path:
    """Where bundles live: ``$KWAIGYM_BUNDLES``, else ``$XDG_CACHE_HOME/kwaigym/bundles``."""
    if override := os.environ.get("KWAIGYM_BUNDLES"):
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kwaigym" / "bundles"


def cached_install(
    cache: Path, name: str, what: str, cmd_for: Callable[[Path], list[str]], timeout: float
) -> Path:
    """Run ``cmd_for(directory)`` once into ``cache/name``: concurrent installers wait on a file lock,
    and a half-done install is never used (it goes to ``<name>.partial`` and is renamed when done).

    Raises:
        HostSetupError: the install failed (its output tail is in the message).
    """
    dest = cache / name
    if (dest / _DONE).exists():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing the same bundle
        if (dest / _DONE).exists():
            return dest
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        proc = subprocess.run(cmd_for(partial), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
            raise HostSetupError(f"installing {what} failed (exit {proc.returncode}):\n{tail}")
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)
        (dest / _DONE).touch()
    return dest


def npm_bundle(package: str, version: str, *, cache: Path | None = None, timeout: float = 900) -> Path:
    """Install ``package@version`` once; return the bundle directory (holding ``node_modules``).

    Raises:
        HostSetupError: npm is missing or the install failed (its output tail is in the message).
    """
    npm = shutil.which("npm")
    if npm is None:
        raise HostSetupError(f"installing {package}@{version} needs npm: apt-get install npm (or Node.js)")
    flags = ["--no-audit", "--no-fund", "--loglevel=error", f"{package}@{version}"]
    return cached_install(
        cache or bundle_cache(), f"{package.strip('@').replace('/', '-')}-{version}", f"{package}@{version}",
        lambda into: [npm, "install", "--prefix", str(into), *flags], timeout,
    )  # fmt: skip
