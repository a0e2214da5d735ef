"""The record of episodes: an append-only JSONL store that survives crashes, the call tree of an
episode (sub-agents, compaction and rewritten history make trajectories trees, not lines), and
exporters by name for trainers: ``calls``, ``turns``, ``tree`` (DFS-flattened, per-token arrays)
and ``sft``.

    from kwaigym.trajectory import EpisodeStore, exporter
    rows = list(exporter("turns")(EpisodeStore("runs/demo").records()))
"""

from kwaigym.trajectory.export import EXPORTERS, available_exporters, exporter
from kwaigym.trajectory.store import EpisodeStore, episode_to_dict
from kwaigym.trajectory.tree import DecodedCall, TrajectoryTree, TreeNode, build_tree, decode_calls

__all__ = [
    "EpisodeStore",
    "episode_to_dict",
    "EXPORTERS",
    "available_exporters",
    "exporter",
    "DecodedCall",
    "TrajectoryTree",
    "TreeNode",
    "build_tree",
    "decode_calls",
]
