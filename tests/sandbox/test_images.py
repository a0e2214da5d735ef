"""ImageStore against a real podman service: apt mirror parsing, content-addressed builds, errors."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from kwaigym.errors import ConfigError, HostSetupError, ImageError
from kwaigym.sandbox import debian, images
from kwaigym.sandbox.debian import debian_mirror, parse_apt_mirror
from kwaigym.sandbox.images import ImageStore, bootstrap_tag, context_tag

ONE_LINE = """\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://security.example/debian-security bookworm-security main
deb http://updates.example/debian bookworm-updates main
deb [ trusted=yes ] http://main.example/debian bookworm main contrib  # trailing comment
deb http://later.example/debian bookworm main
"""

DEB822 = """\
Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Enabled: no

# a comment before the stanza
Types: deb deb-src
URIs: http://main.example/debian
 http://second.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


# --- pure functions: no podman, no network -----------------------------------------------------------


def test_mirror_from_one_line_format():
    """The one-line format yields the first `deb` URI whose suite is exactly the plain suite."""
    assert parse_apt_mirror([("sources.list", ONE_LINE)], "bookworm") == "http://main.example/debian"
    assert parse_apt_mirror([("sources.list", ONE_LINE)], "trixie") is None


def test_mirror_from_deb822_format():
    """deb822 stanzas: deb-src, disabled and -security stanzas are skipped; continuation lines count."""
    assert parse_apt_mirror([("debian.sources", DEB822)], "bookworm") == "http://main.example/debian"
    assert parse_apt_mirror([("debian.sources", DEB822)], "bookworm-security") == (
        "http://security.example/debian-security"
    )


def test_mirror_from_files_in_apt_order(tmp_path, monkeypatch):
    """Files are read in apt's order (sources.list first); the argument and env var override them."""
    monkeypatch.delenv(debian.MIRROR_ENV, raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://other.example/ubuntu jammy main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "extra.list").write_text("deb http://extra.example/debian bookworm main\n")
    files = debian.apt_source_files(tmp_path)
    assert [f.name for f in files] == ["sources.list", "debian.sources", "extra.list"]
    assert debian_mirror("bookworm", files=files) == "http://main.example/debian"
    assert debian_mirror("bookworm", "http://arg.example/debian", files=files) == "http://arg.example/debian"
    monkeypatch.setenv(debian.MIRROR_ENV, "http://env.example/debian")
    assert debian_mirror("bookworm", files=files) == "http://env.example/debian"


def test_no_mirror_is_a_host_setup_error(tmp_path, monkeypatch):
    """Without a matching apt entry the error names the suite and how to override."""
    monkeypatch.delenv(debian.MIRROR_ENV, raising=False)
    (tmp_path / "sources.list").write_text("deb http://other.example/ubuntu jammy main\n")
    with pytest.raises(HostSetupError, match=debian.MIRROR_ENV):
        debian_mirror("bookworm", files=debian.apt_source_files(tmp_path))


def _context(root: Path, text: str = "FROM scratch\nCOPY a.txt /a.txt\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Containerfile").write_text(text)
    (root / "a.txt").write_text("hello\n")
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "b.sh").write_text("echo b\n")
    return root


def test_context_tag_is_stable(tmp_path):
    """The same content in two directories gives the same tag."""
    one, two = _context(tmp_path / "one"), _context(tmp_path / "two")
    text = (one / "Containerfile").read_text()
    assert context_tag(one, text, {}) == context_tag(two, text, {})
    assert context_tag(one, text, {}).startswith("localhost/kwaigym/build:")
    (one / ".git").mkdir()
    (one / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert context_tag(one, text, {}) == context_tag(two, text, {}), ".git is not part of the key"


def test_context_tag_follows_content_mode_and_args(tmp_path):
    """A changed byte, file mode, new file, Containerfile text or build arg changes the tag."""
    ctx = _context(tmp_path / "ctx")
    text = (ctx / "Containerfile").read_text()
    seen = {context_tag(ctx, text, {})}
    (ctx / "a.txt").write_text("hellO\n")
    seen.add(context_tag(ctx, text, {}))
    (ctx / "sub" / "b.sh").chmod(0o755)
    seen.add(context_tag(ctx, text, {}))
    (ctx / "sub" / "c").write_text("")
    seen.add(context_tag(ctx, text, {}))
    seen.add(context_tag(ctx, text + "RUN true\n", {}))
    seen.add(context_tag(ctx, text, {"V": "1"}))
    seen.add(context_tag(ctx, text, {"V": "2"}))
    assert len(seen) == 7
    assert context_tag(ctx, text, {"A": "1", "B": "2"}) == context_tag(ctx, text, {"B": "2", "A": "1"})


def test_bootstrap_tag():
    """The bootstrap tag ignores package order and duplicates and rejects names debootstrap cannot take."""
    tag = bootstrap_tag("bookworm", ["git", "python3"])
    assert tag == bootstrap_tag("bookworm", ["python3", "git", "git"])
    assert tag.startswith("localhost/kwaigym/debian:bookworm-") and len(tag.rsplit("-", 1)[1]) == 12
    assert tag != bootstrap_tag("bookworm", ["git"]) != bootstrap_tag("trixie", ["git"])
    with pytest.raises(ConfigError):
        bootstrap_tag("bookworm", ["git,evil"])


# --- against podman --------------------------------------------------------------------------------


@pytest.fixture
async def store(service):
    """A store whose built images are removed after the test."""
    store = ImageStore(service)
    built: list[str] = []
    original = store.build

    async def build(*args, **kwargs):
        tag = await original(*args, **kwargs)
        built.append(tag)
        return tag

    store.build = build
    yield store
    for tag in built:
        await store.remove(tag)


def _unique_context(root: Path, base: str, containerfile: str = "Containerfile") -> Path:
    """A context whose tag no earlier run left behind (its file holds the test's time)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "stamp.txt").write_text(f"{time.time_ns()}\n")
    (root / containerfile).write_text(
        f"FROM {base}\nCOPY stamp.txt /stamp.txt\nRUN cp /stamp.txt /built.txt && test -s /built.txt\n"
    )
    return root


@pytest.mark.podman
async def test_build_then_cache_hit(store, base_image, tmp_path):
    """A build makes the content-addressed image; building again returns the same tag at once."""
    ctx = _unique_context(tmp_path / "ctx", base_image)
    tag = await store.build(ctx)
    assert await store.exists(tag)
    start = time.monotonic()
    assert await store.build(ctx) == tag
    assert time.monotonic() - start < 1.0


@pytest.mark.podman
async def test_list_shows_built_image_and_remove_cleans_up(store, base_image, tmp_path):
    """`list` shows kwaigym's images only; `remove` deletes one, and removing it again is no error."""
    tag = await store.build(_unique_context(tmp_path / "ctx", base_image))
    listed = {info.ref: info for info in await store.list()}
    assert tag in listed and base_image in listed
    assert listed[tag].size_mb > 1 and len(listed[tag].id) == 12
    assert all(ref.startswith("localhost/kwaigym/") for ref in listed)
    await store.remove(tag)
    assert not await store.exists(tag)
    assert tag not in {info.ref for info in await store.list()}
    await store.remove(tag)


@pytest.mark.podman
async def test_build_dockerfile_with_args_and_no_network(store, base_image, tmp_path):
    """A Dockerfile is found when there is no Containerfile; build args and network='none' reach RUN."""
    ctx = _unique_context(tmp_path / "ctx", base_image, containerfile="Dockerfile")
    with (ctx / "Dockerfile").open("a") as f:
        f.write('ARG WHO\nRUN test "$WHO" = kwaigym && test "$(grep -c : /proc/net/dev)" = 1\n')
    tag = await store.build(ctx, build_args={"WHO": "kwaigym"}, network="none")
    assert await store.exists(tag)


@pytest.mark.podman
async def test_build_default_network_is_not_the_hosts(store, base_image, tmp_path):
    """RUN steps of a default build get their own network namespace, as with `podman build`."""
    ctx = _unique_context(tmp_path / "ctx", base_image)
    with (ctx / "Containerfile").open("a") as f:
        f.write('ARG HOST_NETNS\nRUN test "$(readlink /proc/self/ns/net)" != "$HOST_NETNS"\n')
    host_netns = os.readlink("/proc/self/ns/net")
    assert await store.exists(await store.build(ctx, build_args={"HOST_NETNS": host_netns}))


@pytest.mark.podman
async def test_containerfile_outside_context(store, base_image, tmp_path):
    """A Containerfile outside the context is used without writing anything into the context."""
    ctx = _unique_context(tmp_path / "ctx", base_image)
    outside = tmp_path / "elsewhere.Containerfile"
    (ctx / "Containerfile").rename(outside)
    before = sorted(p.name for p in ctx.iterdir())
    tag = await store.build(ctx, containerfile=str(outside))
    assert await store.exists(tag)
    assert sorted(p.name for p in ctx.iterdir()) == before


@pytest.mark.podman
async def test_failed_build_gives_image_error_with_log(store, base_image, tmp_path):
    """A failing RUN raises ImageError carrying the tail of the build log."""
    ctx = tmp_path / "bad"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f"FROM {base_image}\nRUN echo marker-{time.time_ns()} && exit 3\n")
    marker = (ctx / "Containerfile").read_text().split()[-4]
    with pytest.raises(ImageError) as info:
        await store.build(ctx)
    assert marker in str(info.value) and "build log" in str(info.value)


@pytest.mark.podman
async def test_missing_containerfile_is_config_error(store, tmp_path):
    """A context without Containerfile or Dockerfile is a ConfigError, before podman is asked."""
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ConfigError, match="Containerfile or Dockerfile"):
        await store.build(tmp_path)
    with pytest.raises(ConfigError, match="nope"):
        await store.build(tmp_path, containerfile="nope")


@pytest.mark.podman
async def test_ensure_present_and_missing(store, base_image):
    """`ensure` returns a present image; a missing one with pull=False says how to get one."""
    assert await store.ensure(base_image, pull=False) == base_image
    with pytest.raises(ImageError, match="kwaigym images bootstrap"):
        await store.ensure("localhost/kwaigym/none:missing", pull=False)


@pytest.mark.podman
async def test_pull_without_registry_fails_fast(store):
    """Pulling from a registry that does not answer (loopback, closed port) fails within seconds."""
    start = time.monotonic()
    with pytest.raises(ImageError, match="no registry reachable at 127.0.0.1:1"):
        await store.ensure("127.0.0.1:1/kwaigym/none:latest")
    assert time.monotonic() - start < 5


@pytest.mark.podman
async def test_pull_from_a_server_that_is_no_registry(store):
    """When the probe is answered but the server is no registry, podman's error comes back as ImageError."""

    async def hang_up(reader, writer):
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ImageError, match=f"cannot pull '127.0.0.1:{port}/kwaigym/none:latest'"):
            await store.pull(f"127.0.0.1:{port}/kwaigym/none:latest")
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.podman
async def test_base_image_is_cached(store, base_image):
    """The base_image image has the default packages' tag, and asking again is a cache hit."""
    assert base_image == bootstrap_tag("bookworm", images.DEFAULT_PACKAGES)
    start = time.monotonic()
    assert await store.base_image() == base_image
    assert time.monotonic() - start < 1.0


@pytest.mark.podman
async def test_bootstrap_without_debootstrap_is_host_setup_error(store, monkeypatch):
    """Without the debootstrap program, bootstrap says what to install instead of failing obscurely."""
    monkeypatch.setattr(images.shutil, "which", lambda *a, **k: None)
    with pytest.raises(HostSetupError, match="apt-get install debootstrap"):
        await store.bootstrap(packages=["python3", f"absent{time.time_ns()}"])
