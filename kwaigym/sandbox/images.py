"""Images for sandboxes: a local one, a pulled one, a built one, or a Debian base made without a registry.

Many hosts that run sandboxes reach no container registry, so ``ImageStore``
offers, cheapest first: an image already on the podman host; a pull, tried only
after the registry answered a short TCP probe (an offline host fails in seconds,
with advice, instead of hanging); a build from a Containerfile; and a Debian
base made by ``debootstrap`` from the mirror this machine's apt already uses.
Built and bootstrapped images are content-addressed under ``localhost/kwaigym/``:
the tag hashes what went in, so asking again costs one ``exists`` call and a
changed input gets a new tag instead of a stale image.

Limits: the probe runs from this host, not the podman host, and only for
references naming a registry (a short name is left to podman's resolution and
timeouts). The build key covers the Containerfile, the context (paths, modes,
bytes; ``.git`` skipped) and build args, not a ``FROM`` image that changes under
the same name nor what a ``RUN`` downloads: remove the tag to rebuild. A build's
``RUN`` steps get podman's default network unless ``network`` says otherwise (a
build is not a sandbox), and a failed build leaves its finished steps as untagged
images, podman's layer cache for the next try (``podman image prune`` drops them).
Requests for one tag are serialised within one ``ImageStore``, not across
processes. ``bootstrap`` needs root and debootstrap on this machine (the podman
service may be remote: the tree is streamed to it).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs

from kwaigym.errors import ConfigError, HostSetupError, ImageError
from kwaigym.sandbox.debian import LOG_TAIL_LINES, debian_mirror, debootstrap, log_tail, remove_tree
from kwaigym.sandbox.service import PodmanService, is_transient

log = logging.getLogger(__name__)

PREFIX = "localhost/kwaigym/"
#: The base image of kwaigym's sandboxes; python3 because the built-in ``mini`` agent needs it.
DEFAULT_PACKAGES: tuple[str, ...] = ("python3", "python3-pytest", "git", "ca-certificates", "patch", "procps")

_PROBE_TIMEOUT_S = 3.0
_STALL_TIMEOUT_S = 3600.0  # longest silence of a pull, build or import stream (a RUN step may be quiet)
_INJECTED = ".kwaigym.Containerfile"  # where a Containerfile from outside the context goes in the tar
_DEBIAN_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")
_HOW_TO_GET = (
    "Build it from a Containerfile (`kwaigym images build DIR`) or bootstrap a Debian base from the "
    "Debian mirror, which needs no registry (`kwaigym images bootstrap`), and use that tag."
)


@attrs.frozen(kw_only=True)
class ImageInfo:
    """One image on the podman host."""

    ref: str  #: first tag (first ``localhost/kwaigym/`` tag when filtered), or ``<none>``
    id: str  #: short image id (12 hex)
    size_mb: float  #: size in MB (10**6 bytes), as ``podman images`` shows it
    created: datetime  #: creation time, UTC


# --- content addressing (pure functions) -----------------------------------------------------------


def _context_entries(context: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) of each dir, file and symlink in the context, sorted, no ``.git``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(context):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            if name != ".git" and (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                found.append((path.relative_to(context).as_posix(), path))
    return sorted(found)


def context_tag(context_dir: str | os.PathLike, containerfile: str, build_args: Mapping[str, str]) -> str:
    """``localhost/kwaigym/build:<16 hex>`` from the Containerfile text, the context and the build args."""
    digest = hashlib.sha256()

    def feed(*parts: bytes) -> None:  # length-prefixed: no two different inputs give one stream
        for part in parts:
            digest.update(len(part).to_bytes(8, "big") + part)

    feed(b"containerfile", containerfile.encode())
    for rel, path in _context_entries(Path(context_dir)):
        st = path.lstat()
        feed(rel.encode(), oct(st.st_mode).encode())  # st_mode holds the file type too
        if stat.S_ISLNK(st.st_mode):
            feed(os.readlink(path).encode())
        elif stat.S_ISREG(st.st_mode):
            digest.update(st.st_size.to_bytes(8, "big"))
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    for key, value in sorted(build_args.items()):
        feed(b"arg", key.encode(), value.encode())
    return f"{PREFIX}build:{digest.hexdigest()[:16]}"


def bootstrap_tag(suite: str, packages: Sequence[str]) -> str:
    """``localhost/kwaigym/debian:<suite>-<12 hex>``; checks the names, which go to debootstrap."""
    for name in [suite, *packages]:
        if not _DEBIAN_NAME.match(name):
            raise ConfigError(f"{name!r} is not a Debian suite or package name (such as 'bookworm', 'git')")
    key = json.dumps([suite, sorted(set(packages))])
    return f"{PREFIX}debian:{suite}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


@attrs.frozen
class _BuildPlan:
    context: Path
    tag: str
    dockerfile: str  #: the Containerfile's path inside the tar
    injected: str | None  #: its text, when it lies outside the context and must be added to the tar


def _plan_build(context_dir: str | os.PathLike, containerfile: str | None, args: Mapping[str, str]):
    context = Path(context_dir).resolve()
    if not context.is_dir():
        raise ConfigError(f"build context {str(context)!r} is not a directory")
    # a relative containerfile is taken from the context, like the Harbor layout's environment/Dockerfile
    names = ["Containerfile", "Dockerfile"] if containerfile is None else [containerfile]
    path = next((p.resolve() for p in (context / n for n in names) if p.is_file()), None)
    if path is None:
        raise ConfigError(
            f"no {' or '.join(names)} in build context {str(context)!r}; "
            "add one there or pass containerfile=PATH (absolute or relative to the context)"
        )
    text = path.read_text()
    inside = path.is_relative_to(context)
    dockerfile = path.relative_to(context).as_posix() if inside else _INJECTED
    return _BuildPlan(context, context_tag(context, text, args), dockerfile, None if inside else text)


def _write_context_tar(plan: _BuildPlan, tar_path: Path) -> None:
    """The context as a tar of exactly the entries ``context_tag`` hashed, owned by root."""

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:  # host users do not leak into the image
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(tar_path, "w") as tar:
        for rel, path in _context_entries(plan.context):
            tar.add(path, arcname=rel, recursive=False, filter=as_root)
        if plan.injected is not None:
            info = tarfile.TarInfo(_INJECTED)
            info.size = len(data := plan.injected.encode())
            tar.addfile(info, io.BytesIO(data))


def _registry_address(ref: str) -> tuple[str, int] | None:
    """(host, port) of the registry that ``ref`` names, or None for a short name such as ``debian``."""
    first, sep, _ = ref.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return None
    host, port = re.fullmatch(r"\[?(.*?)\]?(?::(\d+))?", first).groups()  # host, host:5000, [::1]:5000
    return host, int(port or 443)


def _stream(client, path: str, params: dict, body, what: str) -> list[dict]:
    """POST to a streaming endpoint of the API; its JSON lines, or ImageError if the call fails."""
    import podman.errors

    headers = {"Content-Type": "application/x-tar"} if body is not None else {}
    try:
        response = client.api.post(
            path, params=params, data=body, headers=headers, stream=True, timeout=_STALL_TIMEOUT_S
        )
        response.raise_for_status()
        return [json.loads(line) for line in response.iter_lines() if line.strip()]
    except podman.errors.APIError as exc:
        if is_transient(exc):
            raise  # for PodmanService.call to retry
        raise ImageError(f"{what} failed: {exc}") from exc


# --- the store -------------------------------------------------------------------------------------


class ImageStore:
    """Finds, pulls, builds and bootstraps images on one podman service."""

    def __init__(self, service: PodmanService):
        self._service = service
        self._locks: dict[str, asyncio.Lock] = {}

    async def _client(self):
        await self._service.start()
        return self._service.client

    async def exists(self, ref: str) -> bool:
        """True if the podman host has an image of that name or id."""
        return await self._service.call((await self._client()).images.exists, ref)

    async def ensure(self, ref: str, *, pull: bool = True) -> str:
        """``ref`` once it is on the podman host: as it was, or pulled if ``pull`` and a registry answers."""
        if await self.exists(ref):
            return ref
        if not pull:
            raise ImageError(f"image {ref!r} is not on the podman host and pulling is off. {_HOW_TO_GET}")
        return await self.pull(ref)

    async def pull(self, ref: str) -> str:
        """Pull ``ref``; fails within seconds when its registry does not answer a TCP probe."""
        if address := _registry_address(ref):
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(*address), _PROBE_TIMEOUT_S)
                writer.close()
                await writer.wait_closed()
            except (OSError, TimeoutError) as exc:
                raise ImageError(
                    f"cannot pull {ref!r}: no registry reachable at {address[0]}:{address[1]} "
                    f"({exc or 'no answer'} within {_PROBE_TIMEOUT_S:.0f}s). {_HOW_TO_GET}"
                ) from None
        await self._service.call(self._pull_sync, await self._client(), ref)
        return ref

    @staticmethod
    def _pull_sync(client, ref: str) -> None:
        # Not images.pull: it returns an empty Image when the stream ends in an error line.
        report = _stream(
            client, "/images/pull", {"reference": ref, "policy": "always"}, None, f"pulling {ref}"
        )
        errors = [r["error"] for r in report if r.get("error")]
        if errors or not any(r.get("id") for r in report):
            raise ImageError(f"cannot pull {ref!r}: {'; '.join(errors) or 'no image came'}. {_HOW_TO_GET}")

    async def build(
        self,
        context_dir: str | os.PathLike,
        *,
        containerfile: str | None = None,
        build_args: Mapping[str, str] | None = None,
        network: str | None = None,
    ) -> str:
        """Build ``context_dir`` as ``localhost/kwaigym/build:<hash>``, or return that tag if it exists.

        Args:
            context_dir: the build context.
            containerfile: absolute or relative to ``context_dir``; default ``Containerfile``,
                else ``Dockerfile``, in ``context_dir``.
            build_args: values for ``ARG``.
            network: network of ``RUN`` steps: None for podman's default network (as ``podman build``),
                ``none``, ``host``, or the name of a podman network.
        """
        args = dict(build_args or {})
        plan = await asyncio.to_thread(_plan_build, context_dir, containerfile, args)
        async with self._locks.setdefault(plan.tag, asyncio.Lock()):
            if await self.exists(plan.tag):
                return plan.tag
            with tempfile.TemporaryDirectory(prefix="kwaigym-build-") as tmp:
                tar_path = Path(tmp, "context.tar")
                await asyncio.to_thread(_write_context_tar, plan, tar_path)
                client = await self._client()
                await self._service.call(self._build_sync, client, plan, tar_path, args, network)
            return plan.tag

    @staticmethod
    def _build_sync(client, plan: _BuildPlan, tar_path: Path, args: dict[str, str], network: str | None):
        # The build endpoint through podman-py's HTTP client, not images.build, which cannot do two things
        # needed here: without `nsoptions` the 4.3 service runs RUN steps in the *host's* network namespace
        # (images.build sends none, and its network_mode maps to nothing), and its path= mode copies a
        # Containerfile from outside the context into the user's directory and leaves it there. The CLI
        # would do both, but only on this machine; this works with a remote service too.
        policy, namespaces = {
            None: ("NetworkDefault", []),
            "none": ("NetworkDisabled", []),
            "host": ("NetworkEnabled", [{"Name": "network", "Host": True}]),
        }.get(network, ("NetworkEnabled", [{"Name": "network", "Path": network}]))
        params = {
            "t": plan.tag, "dockerfile": plan.dockerfile, "buildargs": json.dumps(args), "layers": True,
            "rm": True, "forcerm": True, "networkmode": policy, "nsoptions": json.dumps(namespaces),
            "outputformat": "application/vnd.oci.image.manifest.v1+json",
        }  # fmt: skip
        what = f"building {plan.tag} from {plan.context}"
        with open(tar_path, "rb") as body:  # opened per attempt: a retry resends from byte 0
            report = _stream(client, "/build", params, body, what)
        if errors := [r["error"] for r in report if r.get("error")]:
            lines = [r.get("stream") or f"{r.get('error', '')}\n" for r in report]
            raise ImageError(
                f"{what} failed: {errors[-1].strip()}\n"
                f"--- build log, last {LOG_TAIL_LINES} lines ---\n{log_tail(lines)}"
            )

    async def bootstrap(
        self,
        *,
        suite: str = "bookworm",
        packages: Sequence[str] = DEFAULT_PACKAGES,
        mirror: str | None = None,
    ) -> str:
        """A Debian ``suite`` minbase with ``packages``, made without any registry; cached by its tag.

        debootstrap runs from ``mirror`` (else $KWAIGYM_DEBIAN_MIRROR, else this machine's apt mirror) into
        a temporary directory, always removed; the tree is imported as
        ``localhost/kwaigym/debian:<suite>-<hash of suite and packages>``.
        """
        tag = bootstrap_tag(suite, packages)
        packages = sorted(set(packages))
        async with self._locks.setdefault(tag, asyncio.Lock()):
            if await self.exists(tag):
                return tag
            program = shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
            if os.geteuid() != 0 or program is None:
                raise HostSetupError(
                    f"bootstrapping {tag} needs root and debootstrap on this machine (root: "
                    f"{os.geteuid() == 0}, debootstrap: {program or 'missing'}). Run as root on Debian or "
                    "Ubuntu after `apt-get install debootstrap`, or build or pull an image to use instead."
                )
            url = debian_mirror(suite, mirror)
            tree = tempfile.mkdtemp(prefix="kwaigym-debootstrap-")
            try:
                await debootstrap(program, suite, packages, tree, url)
                changes = [
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "ENV LANG=C.UTF-8",
                    'CMD ["/bin/bash"]',
                    f"LABEL io.kwaigym.bootstrap={suite}:{','.join(packages)}",
                ]
                await self._service.call(self._import_sync, await self._client(), tree, tag, changes)
            finally:
                await asyncio.to_thread(remove_tree, tree)
            log.info("bootstrapped %s from %s", tag, url)
            return tag

    @staticmethod
    def _import_sync(client, tree: str, tag: str, changes: list[str]) -> None:
        import podman.errors

        # The API's import rather than `podman import`: the tar streams to the service, local or remote.
        cmd = ["tar", "--numeric-owner", "--one-file-system", "-C", tree, "-c", "."]
        with (
            tempfile.TemporaryFile() as err,
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err) as tar,
        ):
            try:
                client.api.post(
                    "/images/import", params={"reference": tag, "changes": changes}, data=tar.stdout,
                    headers={"Content-Type": "application/x-tar"}, timeout=_STALL_TIMEOUT_S,
                ).raise_for_status()  # fmt: skip
            except podman.errors.APIError as exc:
                tar.kill()
                raise ImageError(f"importing the Debian tree as {tag} failed: {exc}") from exc
            if tar.wait() != 0:
                err.seek(0)
                raise ImageError(
                    f"tar of the Debian tree failed: {err.read()[-2000:].decode(errors='replace')}"
                )

    async def base_image(self) -> str:
        """The image sandboxes use unless a task names another: ``bootstrap()`` with its defaults."""
        return await self.bootstrap()

    async def list(self, *, all: bool = False) -> list[ImageInfo]:  # noqa: A002 - as `podman images --all`
        """kwaigym's images (``localhost/kwaigym/...``) on the podman host, or every image if ``all``."""
        found = []
        for image in await self._service.call((await self._client()).images.list):
            tags = [t for t in image.attrs.get("RepoTags") or [] if t != "<none>:<none>"]
            ours = [t for t in tags if t.startswith(PREFIX)]
            if ours or all:
                info = ImageInfo(
                    ref=(ours or tags or ["<none>"])[0],
                    id=image.attrs["Id"].removeprefix("sha256:")[:12],
                    size_mb=round(image.attrs.get("Size", 0) / 1e6, 1),
                    created=datetime.fromtimestamp(image.attrs.get("Created", 0), UTC),  # libpod: unix time
                )
                found.append(info)
        return found

    async def remove(self, ref: str) -> None:
        """Remove image ``ref`` and the build layers only it used; a missing image is no error."""
        import podman.errors

        try:
            await self._service.call((await self._client()).images.remove, ref)
        except (podman.errors.NotFound, podman.errors.ImageNotFound):
            return
        except podman.errors.APIError as exc:
            raise ImageError(f"cannot remove {ref!r}: {exc}; first remove the containers using it") from exc
