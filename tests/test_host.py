"""Host setup: detection from faked host facts, the drop-in's rendering and lifecycle, and a no-op run."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import tomllib

import pytest

from kwaigym import host
from kwaigym.errors import HostSetupError

HIGH = host.PODMAN_DEFAULT_RLIMIT
# A host where podman's defaults work: high limits, cgroup v2 (faked by each test's cgroup dir).
NORMAL = dict(nofile_hard=HIGH, nproc_hard=4 * HIGH, can_raise=True, nr_open=HIGH, pid_max=4 * HIGH)


@pytest.fixture
def cgroup_v2(tmp_path):
    root = tmp_path / "v2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    return root


@pytest.fixture
def cgroup_hybrid(tmp_path):
    root = tmp_path / "hybrid"
    for sub in ("memory", "pids", "unified"):
        (root / sub).mkdir(parents=True)
    return root


@pytest.fixture
def cgroup_v1(tmp_path):
    root = tmp_path / "v1"
    for sub in ("memory", "pids"):
        (root / sub).mkdir(parents=True)
    return root


def test_cgroup_mode_tells_v2_hybrid_v1_and_none(cgroup_v2, cgroup_hybrid, cgroup_v1, tmp_path):
    """cgroup_mode reads the layout of the cgroup root."""
    assert host.cgroup_mode(cgroup_v2) == "v2"
    assert host.cgroup_mode(cgroup_hybrid) == "hybrid"
    assert host.cgroup_mode(cgroup_v1) == "v1"
    assert host.cgroup_mode(tmp_path / "missing") == "none"


def test_normal_v2_host_needs_no_fixes(cgroup_v2):
    """High limits on cgroup v2 with crun installed need nothing."""
    assert host.podman_config_fixes(**NORMAL, cgroup_root=cgroup_v2, crun_installed=True) == {}


def test_low_hard_limits_without_cap_sys_resource_are_capped(cgroup_v2):
    """Hard limits below podman's default that cannot be raised become default_ulimits."""
    facts = {**NORMAL, "nofile_hard": 20000, "nproc_hard": 4096, "can_raise": False}
    fixes = host.podman_config_fixes(**facts, cgroup_root=cgroup_v2, crun_installed=False)
    assert fixes == {"containers": {"default_ulimits": ["nofile=20000:20000", "nproc=4096:4096"]}}


def test_only_the_low_limit_is_fixed():
    """A low nofile with a high nproc fixes nofile alone."""
    facts = {**NORMAL, "nofile_hard": 20000, "can_raise": False}
    assert host.ulimit_fixes(**facts) == ["nofile=20000:20000"]


def test_nproc_is_capped_at_pid_max():
    """podman lowers its own nproc to kernel.pid_max, so the fix must not exceed it."""
    facts = {**NORMAL, "nproc_hard": 96364, "can_raise": False, "pid_max": 32768}
    assert host.ulimit_fixes(**facts) == ["nproc=32768:32768"]


def test_low_hard_limits_with_cap_sys_resource_need_no_fix():
    """A process that may raise its hard limits lets podman's defaults work."""
    assert host.ulimit_fixes(**{**NORMAL, "nofile_hard": 20000, "nproc_hard": 4096}) == []


def test_nofile_above_nr_open_is_fixed_even_with_cap_sys_resource():
    """No capability lifts nofile above fs.nr_open."""
    facts = {**NORMAL, "nofile_hard": 524288, "nr_open": 524288}
    assert host.ulimit_fixes(**facts) == ["nofile=524288:524288"]


def test_unlimited_hard_limits_need_no_fix():
    """RLIM_INFINITY counts as high enough."""
    inf = host.resource.RLIM_INFINITY
    assert host.ulimit_fixes(**{**NORMAL, "nofile_hard": inf, "nproc_hard": inf, "can_raise": False}) == []


@pytest.mark.parametrize("layout", ["cgroup_hybrid", "cgroup_v1"])
def test_crun_on_hybrid_or_v1_cgroups_selects_runc(layout, request):
    """crun refuses hybrid cgroups, so runc is pinned where crun could be picked."""
    root = request.getfixturevalue(layout)
    fixes = host.podman_config_fixes(**NORMAL, cgroup_root=root, crun_installed=True)
    assert fixes == {"engine": {"runtime": "runc"}}


def test_hybrid_cgroups_without_crun_need_no_runtime(cgroup_hybrid):
    """Without crun, podman already uses runc."""
    assert host.podman_config_fixes(**NORMAL, cgroup_root=cgroup_hybrid, crun_installed=False) == {}


def test_has_capability_reads_capeff():
    """CapEff bit 24 is CAP_SYS_RESOURCE."""
    assert host.has_capability(24, "CapPrm:\t0\nCapEff:\t000001ffffffffff\n")
    assert not host.has_capability(24, "CapEff:\t000001fffeffffff\n")
    assert not host.has_capability(24, "Name:\tpython\n")


def test_rendered_config_is_toml_with_a_header():
    """The drop-in parses as TOML to the fixes and says who wrote it."""
    fixes = {
        "containers": {"default_ulimits": ["nofile=20000:20000", "nproc=4096:4096"]},
        "engine": {"runtime": "runc"},
    }
    text = host.render_podman_config(fixes)
    assert text.startswith("# Written by kwaigym")
    assert tomllib.loads(text) == fixes


def test_write_is_idempotent(tmp_path):
    """A second write of the same fixes leaves the file untouched."""
    path = tmp_path / "containers.conf.d" / "50-kwaigym.conf"
    fixes = {"engine": {"runtime": "runc"}}
    assert host.write_podman_config(fixes, path) == "written"
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert host.write_podman_config(fixes, path) == "unchanged"
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_write_replaces_different_content(tmp_path):
    """A hand-written drop-in is replaced by kwaigym's own content."""
    path = tmp_path / "50-kwaigym.conf"
    path.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024"]\n')
    fixes = {"containers": {"default_ulimits": ["nofile=20000:20000"]}}
    assert host.write_podman_config(fixes, path) == "written"
    assert path.read_text() == host.render_podman_config(fixes)


def test_no_fixes_remove_the_drop_in(tmp_path):
    """With nothing to fix, our drop-in is removed, and a second run finds it absent."""
    path = tmp_path / "50-kwaigym.conf"
    host.write_podman_config({"engine": {"runtime": "runc"}}, path)
    assert host.write_podman_config({}, path) == "removed"
    assert not path.exists()
    assert host.write_podman_config({}, path) == "absent"


def test_missing_packages_maps_programs_to_packages():
    """Each missing program names its Debian package once."""
    present = {"podman", "runc", "debootstrap"}
    missing = host.missing_packages(which=lambda prog: prog if prog in present else None)
    assert missing == ["catatonit", "iptables", "openssh-client", "slirp4netns", "util-linux"]
    with_tests = host.missing_packages(lambda p: None, required={**host.REQUIRED, **host.TEST_REQUIRED})
    assert "openssh-server" in with_tests


def test_podman_failure_carries_its_stderr(monkeypatch):
    """A failing podman command raises HostSetupError with podman's own message."""

    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 125, "", "Error: crun: cgroups in hybrid mode")

    monkeypatch.setattr(host.subprocess, "run", fake_run)
    with pytest.raises(HostSetupError, match="cgroups in hybrid mode"):
        host.verify_podman()


@pytest.mark.podman
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("podman"), reason="needs root and podman")
def test_setup_host_is_a_fast_no_op_here(capsys):
    """On this set-up machine setup_host changes nothing, finishes fast, and podman info works."""
    host.setup_host()  # settle, in case this host was not set up yet
    start = time.monotonic()
    host.setup_host()
    elapsed = time.monotonic() - start
    assert elapsed < 2, f"no-op setup took {elapsed:.2f} s"
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("kwaigym host ready") and "installed []" in last
    assert "drop-in unchanged" in last or "drop-in absent" in last
    assert host.verify_podman()["host"]["ociRuntime"]["name"]


def test_kwaigym_settings_always_go_in_the_drop_in(tmp_path):
    """The exec-cleanup delay is written on every host, next to any detected fixes."""
    import tomllib

    merged = host.with_kwaigym_settings({"engine": {"runtime": "runc"}})
    assert merged == {"engine": {"exit_command_delay": 5, "runtime": "runc"}}
    assert host.with_kwaigym_settings({}) == host.KWAIGYM_SETTINGS
    path = tmp_path / "50-kwaigym.conf"
    host.write_podman_config(merged, path)
    assert tomllib.loads(path.read_text()) == merged
    assert "conmon" in path.read_text()
