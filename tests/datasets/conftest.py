"""The fixtures hold tasks' own test files (run inside sandboxes, never by this pytest)."""

collect_ignore_glob = ["fixtures/*"]
