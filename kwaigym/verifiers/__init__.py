"""Verifiers: the reward of an attempt, from the sandbox the agent left.

    from kwaigym.verifiers import Attempt, verify

    result = await verify(sandbox, task, Attempt(final_message=text))   # seal, run, never raise
    if result.reward_valid:
        print(result.reward, result.details)

Kinds: ``script`` (the task's test script; Harbor's reward files), ``swe`` (FAIL_TO_PASS and
PASS_TO_PASS tests, read by log parsers), ``output`` (QA answers and program outputs),
``judge`` (a model and a rubric). More come by entry point (group ``kwaigym.verifiers``).
"""

from kwaigym.verifiers.base import (
    LOGS_DIR,
    TESTS_DIR,
    Attempt,
    Verifier,
    VerifierError,
    VerifierResult,
    seal,
)
from kwaigym.verifiers.parsers import PARSERS, canonical_id
from kwaigym.verifiers.registry import available, get_verifier, verify

__all__ = [
    "LOGS_DIR",
    "PARSERS",
    "TESTS_DIR",
    "Attempt",
    "Verifier",
    "VerifierError",
    "VerifierResult",
    "available",
    "canonical_id",
    "get_verifier",
    "seal",
    "verify",
]
