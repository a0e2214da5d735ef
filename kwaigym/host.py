"""Prepare this machine to run kwaigym's podman sandboxes (``python -m kwaigym.host``).

What it changes on the machine, and only when needed:

- Installs the Debian/Ubuntu packages the sandboxes use (podman, runc, debootstrap, iptables,
  slirp4netns, catatonit) with apt-get, when one of their programs is missing.
- Writes one podman drop-in, ``/etc/containers/containers.conf.d/50-kwaigym.conf``, holding the
  settings that this host needs and podman's defaults get wrong, and removes it when none are needed:

  * ``default_ulimits``: podman as root gives every container nofile and nproc limits of 1048576.
    Where the hard limits of this process are lower and it may not raise them (no
    CAP_SYS_RESOURCE, as inside another container), every container fails to start with
    "setrlimit: operation not permitted"; the drop-in caps them at the hard limits (nproc also at
    kernel.pid_max, to which podman lowers its own limit).
  * ``runtime = "runc"``: crun 1.8 (Debian 12) refuses hybrid cgroups ("cgroups in hybrid mode not
    supported"); runc works with them and with cgroup v1.

It never edits ``/etc/containers/containers.conf`` itself, and on a normal cgroup-v2 host whose
limits are high it changes nothing but missing packages. Limits: it knows apt-get only, sets up
rootful podman only, and reads the limits of the process that runs it; a podman started later
under lower limits (another service, another shell) may still need its own settings.
It checks its work with ``podman info``, and when it changed something, by starting a throwaway
container whose rootfs is podman's static catatonit (no image needed).
Every detection below is a function of its inputs (limits, paths), so tests can fake the host.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kwaigym.errors import HostSetupError

# podman's own default for nofile and nproc when it runs as root.
PODMAN_DEFAULT_RLIMIT = 1_048_576
CAP_SYS_RESOURCE = 24

CGROUP_ROOT = Path("/sys/fs/cgroup")
DROPIN_PATH = Path("/etc/containers/containers.conf.d/50-kwaigym.conf")
CATATONIT = Path("/usr/libexec/podman/catatonit")
# Where root's programs live even when PATH (sudo, cron, CI) leaves the sbin directories out.
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Program (or absolute path) the sandboxes need -> Debian/Ubuntu package that ships it.
REQUIRED = {
    "podman": "podman",
    "runc": "runc",
    "debootstrap": "debootstrap",
    "iptables-restore": "iptables",
    "nsenter": "util-linux",
    "slirp4netns": "slirp4netns",
    str(CATATONIT): "catatonit",
    "ssh": "openssh-client",  # for ssh:// podman service URLs
}
# Only the test suite needs these: an sshd on loopback stands in for a remote podman host, and a
# headless Chromium opens the HTML report.
TEST_REQUIRED = {"sshd": "openssh-server", "chromium": "chromium"}


def _which(program: str) -> str | None:
    if os.path.isabs(program):
        return program if os.access(program, os.X_OK) else None
    return shutil.which(program, path=f"{os.environ.get('PATH', '')}:{_SYSTEM_PATH}")


def missing_packages(which=_which, required: dict[str, str] = REQUIRED) -> list[str]:
    """Packages whose program is not installed, sorted (empty when all are there)."""
    return sorted({pkg for prog, pkg in required.items() if not which(prog)})


def check_platform() -> None:
    """Raise HostSetupError unless this is Linux, we are root, and packages can be installed."""
    if not sys.platform.startswith("linux"):
        raise HostSetupError(
            f"kwaigym's sandboxes need Linux with podman; this machine runs {sys.platform}. "
            "Run kwaigym on a Linux machine or VM."
        )
    if os.geteuid() != 0:
        raise HostSetupError(
            "kwaigym.host sets up rootful podman (installs packages, writes "
            f"{DROPIN_PATH}) and needs root, but runs as uid {os.geteuid()}. Run it as root "
            "(`sudo make setup`), or install podman yourself (Debian packages: "
            f"{', '.join(sorted(set(REQUIRED.values())))}) and check that `podman info` and "
            "`podman run --rm IMAGE true` work for the user that runs kwaigym."
        )
    missing = missing_packages()
    if missing and not _which("apt-get"):
        raise HostSetupError(
            f"Programs missing: {', '.join(p for p, pkg in REQUIRED.items() if pkg in missing)}; "
            "kwaigym.host installs them with apt-get only (Debian, Ubuntu), and this machine has "
            "none. Install these packages (Debian names) with your package manager, then run "
            f"`python -m kwaigym.host` again: {', '.join(missing)}."
        )


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise HostSetupError(
            f"`apt-get {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}\n"
            "Fix the package sources or the network, or install these packages by hand, then run "
            "`python -m kwaigym.host` again."
        )


def install_packages(required: dict[str, str] = REQUIRED) -> list[str]:
    """Install the missing packages with apt-get; a no-op (no apt) when all are there.

    Returns:
        The packages it installed.
    """
    missing = missing_packages(required=required)
    if not missing:
        return []
    print(f"kwaigym: installing {' '.join(missing)} with apt-get", flush=True)
    _apt("update")
    _apt("install", "-y", "--no-install-recommends", *missing)
    still = missing_packages(required=required)
    if still:
        raise HostSetupError(
            f"apt-get installed {' '.join(missing)}, yet these packages' programs are still "
            f"missing: {' '.join(still)}. Check `dpkg -L PACKAGE` and install them by hand."
        )
    return missing


# --- detection: pure functions of the host's facts, defaults read from the real system ----------


def has_capability(bit: int, status: str | None = None) -> bool:
    """Whether this process holds capability ``bit`` (from the CapEff line of /proc/self/status)."""
    if status is None:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def _read_int(path: str, default: int) -> int:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def ulimit_fixes(
    nofile_hard: int | None = None,
    nproc_hard: int | None = None,
    *,
    can_raise: bool | None = None,
    nr_open: int | None = None,
    pid_max: int | None = None,
) -> list[str]:
    """``default_ulimits`` entries that podman needs here, or ``[]`` when its defaults work.

    podman's default (1048576) fails when it is above the hard limit and cannot be raised: without
    CAP_SYS_RESOURCE, or for nofile above the kernel's ``fs.nr_open`` ceiling. The nproc fix is
    also capped at ``kernel.pid_max``: podman 4.3 lowers its own nproc limit to that (observed:
    hard 96364, pid_max 32768 -> podman ran with 32768 and "nproc=96364:96364" failed in setrlimit).

    Args:
        nofile_hard: hard RLIMIT_NOFILE; this process's when None. RLIM_INFINITY (-1) means none.
        nproc_hard: hard RLIMIT_NPROC; this process's when None.
        can_raise: whether hard limits may be raised (CAP_SYS_RESOURCE); this process's when None.
        nr_open: the kernel's nofile ceiling, /proc/sys/fs/nr_open when None.
        pid_max: the kernel's highest pid, /proc/sys/kernel/pid_max when None.
    """
    if nofile_hard is None:
        nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if nproc_hard is None:
        nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    if can_raise is None:
        can_raise = has_capability(CAP_SYS_RESOURCE)
    if nr_open is None:
        nr_open = _read_int("/proc/sys/fs/nr_open", PODMAN_DEFAULT_RLIMIT)
    if pid_max is None:
        pid_max = _read_int("/proc/sys/kernel/pid_max", PODMAN_DEFAULT_RLIMIT)
    fixes = []
    for name, hard, ceiling in (("nofile", nofile_hard, nr_open), ("nproc", nproc_hard, pid_max)):
        if hard == resource.RLIM_INFINITY or hard >= PODMAN_DEFAULT_RLIMIT:
            continue
        if can_raise and (name == "nproc" or ceiling >= PODMAN_DEFAULT_RLIMIT):
            continue
        value = min(hard, ceiling) if name == "nproc" else hard
        fixes.append(f"{name}={value}:{value}")
    return fixes


def cgroup_mode(root: Path = CGROUP_ROOT) -> str:
    """``"v2"`` (unified), ``"hybrid"`` (v1 plus a v2 ``unified`` mount), ``"v1"``, or ``"none"``.

    A cgroup2 root holds ``cgroup.controllers``; a v1 or hybrid root is a tmpfs of per-controller
    mounts, and hybrid adds ``unified``.
    """
    if not root.is_dir():
        return "none"
    if (root / "cgroup.controllers").exists():
        return "v2"
    return "hybrid" if (root / "unified").is_dir() else "v1"


def podman_config_fixes(
    *,
    nofile_hard: int | None = None,
    nproc_hard: int | None = None,
    can_raise: bool | None = None,
    nr_open: int | None = None,
    pid_max: int | None = None,
    cgroup_root: Path = CGROUP_ROOT,
    crun_installed: bool | None = None,
) -> dict[str, dict[str, str | list[str]]]:
    """The containers.conf settings this host needs, by table; ``{}`` on a normal cgroup-v2 host.

    Arguments default to the real system; see ``ulimit_fixes`` for the limits. ``crun_installed``
    stands for "podman may pick crun": podman prefers crun whenever it is installed.
    """
    fixes: dict[str, dict[str, str | list[str]]] = {}
    ulimits = ulimit_fixes(nofile_hard, nproc_hard, can_raise=can_raise, nr_open=nr_open, pid_max=pid_max)
    if ulimits:
        fixes["containers"] = {"default_ulimits": ulimits}
    if crun_installed is None:
        crun_installed = _which("crun") is not None
    if crun_installed and cgroup_mode(cgroup_root) in ("hybrid", "v1"):
        fixes["engine"] = {"runtime": "runc"}
    return fixes


# --- the drop-in ---------------------------------------------------------------------------------


#: Settings kwaigym wants on every host, fixes or not. Podman keeps each API exec's conmon alive
#: for exit_command_delay (300 s by default) after the exec ends; a sandbox makes many execs, so
#: thousands of idle conmon processes would pile up on the host. Exit codes are read at once.
KWAIGYM_SETTINGS: dict[str, dict[str, str | int | list[str]]] = {"engine": {"exit_command_delay": 5}}


def with_kwaigym_settings(fixes: dict) -> dict:
    """``fixes`` plus ``KWAIGYM_SETTINGS`` (fixes win where both set a key)."""
    merged = {table: dict(settings) for table, settings in KWAIGYM_SETTINGS.items()}
    for table, settings in fixes.items():
        merged.setdefault(table, {}).update(settings)
    return merged


def _toml_value(value: str | int | list[str]) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of plain text is a valid TOML basic string
    return "[" + ", ".join(json.dumps(v) for v in value) + "]"


def render_podman_config(fixes: dict[str, dict[str, str | list[str]]]) -> str:
    """The drop-in's text for ``fixes``: a header saying who wrote it and why, then TOML tables."""
    lines = [
        "# Written by kwaigym (python -m kwaigym.host); rewritten or removed on each run.",
        "# Settings this host needs and podman's defaults get wrong:",
    ]
    if "containers" in fixes:
        lines.append("# - default_ulimits: the hard limits here (for nproc also kernel.pid_max) are below")
        lines.append(
            "#   podman's default of 1048576 and cannot be raised; containers would fail in setrlimit."
        )
    if "runtime" in fixes.get("engine", {}):
        lines.append("# - runtime: cgroups are v1 or hybrid here, which crun refuses; runc works.")
    if "exit_command_delay" in fixes.get("engine", {}):
        lines.append("# - exit_command_delay: kwaigym's sandboxes run many execs; podman would keep a")
        lines.append("#   conmon process per exec alive for 300 s after it ended.")
    for table, settings in fixes.items():
        lines += ["", f"[{table}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def write_podman_config(fixes: dict[str, dict[str, str | list[str]]], path: Path = DROPIN_PATH) -> str:
    """Write ``fixes`` to the drop-in at ``path``, or remove it when there are none.

    The file is replaced atomically and only when its content differs, so a no-op run touches
    nothing. Returns what happened: ``"written"``, ``"unchanged"``, ``"removed"`` or ``"absent"``.
    """
    if not fixes:
        if path.exists():
            path.unlink()
            return "removed"
        return "absent"
    text = render_podman_config(fixes)
    try:
        if path.read_text() == text:
            return "unchanged"
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return "written"


# --- verification and entry point ----------------------------------------------------------------


def _podman(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = ["podman", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise HostSetupError("podman is not installed: run `python -m kwaigym.host` as root.") from None
    except subprocess.TimeoutExpired:
        raise HostSetupError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s.") from None
    if proc.returncode != 0:
        raise HostSetupError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr.strip()}\n"
            f"Expected it to succeed after setup. Errors naming setrlimit or cgroups are what "
            f"{DROPIN_PATH} should fix (run `python -m kwaigym.host` as root); a missing image is "
            "built by `kwaigym images bootstrap`."
        )
    return proc


def verify_podman(image: str | None = None) -> dict:
    """Check that ``podman info`` (and ``podman run --rm IMAGE true`` when given) works.

    Returns:
        ``podman info`` as a dict.
    """
    info = json.loads(_podman(["info", "--format", "json"], timeout=60).stdout)
    if image:
        _podman(["run", "--rm", image, "true"], timeout=300)
    return info


def smoke_test_container() -> None:
    """Start and remove one container whose rootfs is a lone static catatonit: needs no image.

    ``podman info`` passes even where every container fails to start (bad ulimits, a runtime that
    refuses the cgroups), so a changed setup is proven by starting one. catatonit is static by
    design: podman bind-mounts it into arbitrary images for ``--init``.
    """
    with tempfile.TemporaryDirectory(prefix="kwaigym-smoke-") as rootfs:
        shutil.copy(CATATONIT, os.path.join(rootfs, "catatonit"))
        args = ["run", "--rm", "--network", "none", "--rootfs", rootfs, "/catatonit", "--version"]
        _podman(args, timeout=120)


def setup_host(image: str | None = None, *, test_tools: bool = False) -> dict:
    """Make this host ready for sandboxes and print a one-line summary; fast when already done.

    A container is started only when something changed (packages, drop-in) or ``image`` is given.
    """
    start = time.monotonic()
    check_platform()
    installed = install_packages({**REQUIRED, **TEST_REQUIRED} if test_tools else REQUIRED)
    fixes = podman_config_fixes()
    dropin = write_podman_config(with_kwaigym_settings(fixes))
    info = verify_podman(image)
    if installed or dropin in ("written", "removed"):
        smoke_test_container()
    settings = [
        " ".join(v) if isinstance(v, list) else f"{k}={v}"
        for table in fixes.values()
        for k, v in table.items()
    ]
    runtime = info.get("host", {}).get("ociRuntime", {}).get("name", "?")
    version = info.get("version", {}).get("Version", "?")
    print(
        f"kwaigym host ready in {time.monotonic() - start:.2f} s: podman {version}, runtime {runtime}, "
        f"cgroups {cgroup_mode()}, installed [{' '.join(installed)}], "
        f"drop-in {dropin}{' (' + '; '.join(settings) + ')' if settings else ''}",
        flush=True,
    )
    return fixes


def main(argv: list[str] | None = None) -> int:
    """``python -m kwaigym.host [--image IMAGE]``: set up this host; exit 1 with advice on failure."""
    parser = argparse.ArgumentParser(prog="python -m kwaigym.host", description=main.__doc__)
    parser.add_argument("--image", help="also check that `podman run --rm IMAGE true` works")
    parser.add_argument("--test-tools", action="store_true", help="also install what the test suite uses")
    args = parser.parse_args(argv)
    try:
        setup_host(args.image, test_tools=args.test_tools)
    except HostSetupError as exc:
        print(f"kwaigym host setup failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
