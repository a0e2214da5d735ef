"""Rollout engines: where the policy's completions come from.

``base`` (the shared interface and chat layer), ``local`` (a model in this process; ``server`` puts it
on HTTP), ``sglang`` (a client of SGLang servers: routing, weight sync, memory; ``servers``,
``launch`` and ``weight_group`` are its parts; ``sglang_routes`` teaches the local server SGLang's
protocol so the client is tested against it)."""
