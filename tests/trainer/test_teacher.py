"""OPD teachers: batched and cached scoring equal to scoring each sequence alone; best expert per
domain; the batch's teacher tensor (NaN where no teacher), which leaves plain RL advantages."""

from __future__ import annotations

import pytest

from kwaigym.errors import ConfigError

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
pytest.importorskip("transformers", reason="the trainer extra (transformers) is not installed")
from reference_trainer.losses import opd_advantages  # noqa: E402
from reference_trainer.model import load_model  # noqa: E402
from reference_trainer.rl import token_logprobs  # noqa: E402
from reference_trainer.teacher import TeacherScorer, best_experts, teacher_logprobs  # noqa: E402

LENGTHS = [5, 12, 3, 9, 12, 7]


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-dense", vocab_size=64, seed=1)


def sequences(seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 64, (n,), generator=g).tolist() for n in LENGTHS]


def alone(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return token_logprobs(model, torch.tensor([ids]), None)[0]


def test_batched_scores_equal_each_sequence_alone(model):
    """Sequences of mixed lengths, padded into forwards of at most 30 tokens, score as if alone."""
    scorer = TeacherScorer(model, max_batch_tokens=30)
    seqs = sequences()
    got = scorer.score(seqs)
    for ids, logp in zip(seqs, got, strict=True):
        assert logp.shape == (len(ids) - 1,)
        torch.testing.assert_close(logp, alone(model, ids), rtol=0, atol=1e-5)
    assert scorer.stats.forwards > 1 and scorer.stats.scored_tokens == sum(LENGTHS)


def test_repeated_sequences_are_scored_once(model):
    """Duplicates within a call and across calls hit the cache; results are equal and not shared."""
    scorer = TeacherScorer(model)
    seqs = sequences()
    first = scorer.score(seqs + seqs[:2])
    assert (scorer.stats.forwards, scorer.stats.cache_hits) == (1, 0)
    assert scorer.stats.scored_tokens == sum(LENGTHS)  # the two duplicates were not run again
    second = scorer.score(seqs)
    assert scorer.stats.forwards == 1 and scorer.stats.cache_hits == len(seqs)
    for a, b in zip(first[: len(seqs)], second, strict=True):
        assert torch.equal(a, b)
    second[0].fill_(0.0)  # a caller editing its result does not corrupt the cache
    assert torch.equal(scorer.score(seqs[:1])[0], first[0])


def test_cache_is_bounded_least_recently_used_first(model):
    scorer = TeacherScorer(model, cache_size=2)
    a, b, c = sequences()[:3]
    scorer.score([a]), scorer.score([b]), scorer.score([a]), scorer.score([c])  # b is the oldest now
    forwards = scorer.stats.forwards
    scorer.score([a]), scorer.score([c])
    assert scorer.stats.forwards == forwards
    scorer.score([b])
    assert scorer.stats.forwards == forwards + 1


def test_bad_input_is_refused(model):
    with pytest.raises(ConfigError, match="at least 2 tokens"):
        TeacherScorer(model, name="expert-files").score([[1]])
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        TeacherScorer(model, max_batch_tokens=0)


def test_best_expert_per_domain():
    rates = {"expert-files": {"files": 0.9, "code": 0.2}, "expert-code": {"files": 0.4, "code": 0.8},
             "student": {"files": 0.9, "code": 0.1}}  # fmt: skip
    assert best_experts(rates) == {"files": "expert-files", "code": "expert-code"}
    with pytest.raises(ConfigError, match="no pass rates"):
        best_experts({})


def test_batch_teacher_tensor_and_rows_without_teacher(model):
    """Rows scored by their teacher, NaN on rows without one and on padding; OPD advantages of those
    rows stay the plain RL advantage."""
    seqs = sequences()[:3]
    width = max(map(len, seqs))
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
    scorer = TeacherScorer(model)
    teacher_BT = teacher_logprobs({"input_ids": ids, "attention_mask": mask}, [scorer, None, scorer])
    assert teacher_BT.shape == (3, width - 1)
    torch.testing.assert_close(teacher_BT[0, : len(seqs[0]) - 1], alone(model, seqs[0]), rtol=0, atol=1e-5)
    assert torch.isnan(teacher_BT[1]).all() and torch.isnan(teacher_BT[2, len(seqs[2]) - 1 :]).all()
    assert scorer.stats.forwards == 1  # both of its rows in one call
    adv = torch.tensor([1.0, -2.0, 0.5])
    loss_mask = mask[:, 1:]
    got = opd_advantages(adv, torch.zeros_like(teacher_BT), teacher_BT, loss_mask)
    assert torch.isfinite(got).all()
    assert torch.equal(got[1], torch.where(loss_mask[1] > 0, -2.0, 0.0))
    with pytest.raises(ConfigError, match="2 teachers for 3 rows"):
        teacher_logprobs({"input_ids": ids, "attention_mask": mask}, [scorer, None])
