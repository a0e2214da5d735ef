"""The record of episodes: serialisation and an append-only JSONL store that survives crashes."""

from kwaigym.trajectory.store import EpisodeStore, episode_to_dict

__all__ = ["EpisodeStore", "episode_to_dict"]
