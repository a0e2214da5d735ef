"""Rollout engines: where the policy's completions come from (a local model here; SGLang next)."""
