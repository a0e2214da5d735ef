"""Debian without a registry: the mirror apt already uses, and debootstrap run safely.

``debian_mirror`` reads the archive this machine's apt is configured with (both the
one-line and the deb822 format), so kwaigym never names a mirror itself.
``debootstrap`` runs in its own session, is killed whole on timeout or cancel, and its
temporary tree is removed only after whatever it left mounted inside is detached.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from kwaigym.errors import HostSetupError, ImageError

log = logging.getLogger(__name__)

MIRROR_ENV = "KWAIGYM_DEBIAN_MIRROR"
_DEBOOTSTRAP_TIMEOUT_S = 1800.0
LOG_TAIL_LINES = 40


def log_tail(lines: Iterable[str]) -> str:
    """The last non-blank lines of some log text, for error messages."""
    tail = [line for line in "".join(lines).splitlines() if line.strip()][-LOG_TAIL_LINES:]
    return "\n".join(tail) or "(no output)"


# --- the Debian mirror, from apt's sources (pure functions) ----------------------------------------


def apt_source_files(apt_dir: str | os.PathLike = "/etc/apt") -> list[Path]:
    """apt's source files in its reading order: sources.list, then sources.list.d/*.{list,sources}."""
    parts = Path(apt_dir, "sources.list.d")
    extra = [*parts.glob("*.list"), *parts.glob("*.sources")] if parts.is_dir() else []
    return [p for p in [Path(apt_dir, "sources.list"), *sorted(extra)] if p.is_file()]


def _one_line_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """(uri, [suite]) of each ``deb [options] uri suite components...`` line."""
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()  # options may hold spaces
        if len(words) >= 3 and words[0] == "deb":
            yield words[1], [words[2]]


def _deb822_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """(uri, suites) for each URI of each enabled stanza whose Types include ``deb``."""
    for stanza in re.split(r"\n\s*\n", text):
        lines = [line for line in stanza.splitlines() if not line.startswith("#")]
        # a field runs on over continuation lines, which start with white space
        fields = {k.lower(): v for k, v in re.findall(r"^(\S+?):(.*(?:\n[ \t].*)*)", "\n".join(lines), re.M)}
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").strip().lower() != "no":
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()


def parse_apt_mirror(sources: Iterable[tuple[str, str]], suite: str) -> str | None:
    """The first URI apt uses for exactly ``suite`` (not ``<suite>-security`` or ``-updates``).

    Args:
        sources: (file name, text) pairs in apt's reading order; names ending in
            ``.sources`` are deb822, others the one-line format.
        suite: a plain suite name such as ``bookworm``.
    """
    for name, text in sources:
        entries = _deb822_entries(text) if name.endswith(".sources") else _one_line_entries(text)
        for uri, suites in entries:
            if suite in suites and uri.split(":", 1)[0] in ("http", "https", "file"):
                return uri
    return None


def debian_mirror(suite: str, mirror: str | None = None, files: Sequence[Path] | None = None) -> str:
    """Where to debootstrap ``suite`` from: ``mirror``, else $KWAIGYM_DEBIAN_MIRROR, else apt's sources."""
    if chosen := mirror or os.environ.get(MIRROR_ENV):
        return chosen
    files = apt_source_files() if files is None else files
    if found := parse_apt_mirror(((str(p), p.read_text(errors="replace")) for p in files), suite):
        return found
    raise HostSetupError(
        f"no Debian mirror for suite {suite!r} in this machine's apt sources "
        f"({', '.join(map(str, files)) or 'none found'}): expected an entry whose suite is exactly "
        f"{suite!r}. Pass mirror=URL or set {MIRROR_ENV}=URL to a Debian archive that carries {suite!r}."
    )


# --- running debootstrap --------------------------------------------------------------------


async def debootstrap(program: str, suite: str, packages: list[str], tree: str, mirror: str) -> None:
    cmd = [program, "--variant=minbase", f"--include={','.join(packages)}", suite, tree, mirror]
    log.info("running %s", " ".join(cmd))
    pipe, out = subprocess.PIPE, subprocess.STDOUT
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=subprocess.DEVNULL, stdout=pipe, stderr=out, start_new_session=True
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), _DEBOOTSTRAP_TIMEOUT_S)
    except BaseException:  # timeout or cancel: kill its whole session, so the chroot'ed dpkg goes too
        os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        detail = Path(tree, "debootstrap", "debootstrap.log")  # where debootstrap explains a failure
        text = await asyncio.to_thread(lambda: detail.read_text(errors="replace") if detail.is_file() else "")
        raise ImageError(
            f"debootstrap of {suite} from {mirror} failed (exit {proc.returncode}); check that this mirror "
            f"carries {suite!r} or set {MIRROR_ENV}=URL\n--- log, last {LOG_TAIL_LINES} lines ---\n"
            + log_tail([output.decode(errors="replace"), text])
        )
    await asyncio.to_thread(_prune_tree, Path(tree))


def _prune_tree(tree: Path) -> None:
    """Drop the downloaded .debs and package indexes (about 100 MB); `apt-get update` refetches indexes."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*"):
        for path in tree.glob(pattern):
            path.unlink()


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4]) for line in f]
    return sorted((p for p in points if p.startswith(path.rstrip("/") + "/")), key=len, reverse=True)


def remove_tree(tree: str) -> None:
    """Remove the debootstrap tree after detaching whatever a killed debootstrap left mounted in it.

    rmtree across a still-mounted /proc, /sys or bound /dev would reach into the host's own, so a
    tree with mounts left is kept and logged instead.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    for point in _mounts_under(tree):
        libc.umount2(point.encode(), 2)  # MNT_DETACH
    if left := _mounts_under(tree):
        log.error("not removing %s: still mounted inside it: %s", tree, ", ".join(left))
        return
    shutil.rmtree(tree, ignore_errors=True)
