"""Tree training equals training every root-to-leaf path on its own: the per-path log-probs, and the
gradients of non-linear per-branch losses, on random trees shaped like agents' and on recorded ones."""

from __future__ import annotations

import functools
import random
from typing import NamedTuple

import pytest

from tests.trainer.ranks import join, spawn

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
pytest.importorskip("transformers", reason="the trainer extra (transformers) is not installed")

from kwaigym.errors import ConfigError  # noqa: E402
from kwaigym.trajectory import decode_calls  # noqa: E402
from kwaigym.trajectory.export import byte_tokens, chat_messages, export_tree, flatten, render_chat  # noqa: E402
from reference_trainer.losses import grpo_loss, icepop_mask, mcla_logprobs, turn_gspo_loss  # noqa: E402
from reference_trainer.model import load_model, stochastic_routing  # noqa: E402
from reference_trainer.rl import token_logprobs  # noqa: E402
from reference_trainer.tree import (  # noqa: E402
    FlatTree,
    dense_tree_mask,
    gather_paths,
    pack,
    path_valid,
    tree_logprobs,
)
from tests.trajectory.episodes import load  # noqa: E402

VOCAB = 128
MODELS = ("tiny-dense", "tiny-moe")
RTOL = 1e-5
Token = tuple[int, int, float | None]
"""(id, loss mask, rollout log-prob or None)."""


@functools.cache
def model(name: str, vocab: int = VOCAB):
    """A seeded preset in float32 (shared by the tests: they take gradients with autograd.grad)."""
    return load_model(name, vocab_size=vocab, seed=0)


# --- random trees shaped like agents' -------------------------------------------------------------


class Grower:
    """Seeded token paths made of turns: prompt and tool output (mask 0), answers (mask 1, with a
    rollout log-prob). A new branch's first token differs from every other path's token at that
    place, so paths share exactly the prefix they were forked from."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.paths: list[list[Token]] = []

    def segment(self, policy: bool, lo: int = 3, hi: int = 8) -> list[Token]:
        n = self.rng.randint(lo, hi)
        return [(self.rng.randrange(VOCAB), int(policy), self.rng.uniform(-3.0, -0.05) if policy else None)
                for _ in range(n)]  # fmt: skip

    def turns(self, k: int) -> list[Token]:
        """``k`` answers, each followed by its tool output."""
        return [t for _ in range(k) for t in self.segment(True) + self.segment(False)]

    def branch(self, prefix: list[Token], rest: list[Token]) -> list[Token]:
        n = len(prefix)
        taken = {p[n][0] for p in self.paths if len(p) > n and p[:n] == prefix}
        first = rest[0]
        if first[0] in taken:
            first = (self.rng.choice([i for i in range(VOCAB) if i not in taken]), *first[1:])
        path = [*prefix, first, *rest[1:]]
        self.paths.append(path)
        return path


def subagents(g: Grower) -> None:
    """A main loop with 3 sub-agent branches forking from it at random points."""
    prompt = g.segment(False, 8, 12) + g.segment(False)
    main = g.branch(prompt, g.turns(6))
    for _ in range(3):
        fork = g.rng.randrange(len(prompt), len(main) - 1)
        g.branch(main[:fork], g.segment(False) + g.turns(2))


def compaction(g: Grower) -> None:
    """Compaction restarts: 3 paths sharing only a short system prompt."""
    system = g.segment(False, 4, 6)
    for _ in range(3):
        g.branch(system, g.segment(False) + g.turns(4))


def fan(g: Grower) -> None:
    """12 short answers sampled from one prompt."""
    prompt = g.segment(False, 8, 12) + g.turns(2)
    for _ in range(12):
        g.branch(prompt, g.segment(True, 2, 6))


def chain(g: Grower) -> None:
    """One deep chain: no branching."""
    g.branch(g.segment(False, 8, 12), g.turns(10))


SHAPES = {"subagents": subagents, "compaction": compaction, "fan": fan, "chain": chain}


def grown(shape: str, seed: int) -> tuple[FlatTree, list[list[Token]]]:
    """The tree of a shape (or ``forest``: subagents, compaction and chain packed) and its paths."""
    if shape == "forest":
        parts = [grown(s, seed + i) for i, s in enumerate(("subagents", "compaction", "chain"))]
        return pack([t for t, _ in parts]), [p for _, paths in parts for p in paths]
    g = Grower(seed)
    SHAPES[shape](g)
    columns = [tuple(list(c) for c in zip(*p, strict=True)) for p in g.paths]
    return FlatTree.from_sequences(columns), g.paths


ALL_SHAPES = [*SHAPES, "forest"]


def ids_of(path: list[Token]) -> torch.Tensor:
    return torch.tensor([t[0] for t in path])


# --- the losses, on the tree and on each path -----------------------------------------------------


class Batch(NamedTuple):
    """Loss inputs in the losses' ``(P, T - 1)`` layout, the same for the tree and the paths."""

    mask: torch.Tensor
    turns: torch.Tensor
    old: torch.Tensor
    adv: torch.Tensor
    icepop: torch.Tensor


def turn_ids(mask_BT: torch.Tensor) -> torch.Tensor:
    """A new turn at each run of 1s in the mask; -1 off the mask."""
    starts = (mask_BT > 0) & torch.nn.functional.pad(mask_BT[:, :-1] == 0, (1, 0), value=True)
    return torch.where(mask_BT > 0, starts.long().cumsum(1) - 1, -1)


def batch(tree: FlatTree, logp_BT: torch.Tensor, seed: int, rollout_BT: torch.Tensor | None = None) -> Batch:
    """Old log-probs a random +-0.15 off the current ones, and turns 0, 1, 2, 3, ... shifted by
    -0.3, 0, +0.3, -0.3, ... (so some tokens and turns clip, not all); advantages of both signs;
    an IcePop mask against the rollout log-probs (the tree's, or random ones near the old
    log-probs) with bounds at quantiles, so it drops some tokens only."""
    g = torch.Generator().manual_seed(seed)
    mask = gather_paths(tree, tree.loss_mask)
    turns = turn_ids(mask)
    shift = torch.where(turns >= 0, 0.3 * (turns % 3 - 1), 0.0)
    old = logp_BT.detach() + 0.3 * (torch.rand(mask.shape, generator=g) - 0.5) + shift
    if rollout_BT is None:
        rollout_BT = old + 0.5 * torch.randn(mask.shape, generator=g)
    k = torch.exp(old - rollout_BT)[mask > 0]
    icepop, _ = icepop_mask(old, rollout_BT, float(k.quantile(0.15)), float(k.quantile(0.85)), mask_BT=mask)
    adv = torch.rand(mask.shape[0], generator=g) + 0.2
    adv[1::2] *= -1
    return Batch(mask, turns, old, adv, icepop)


def counts(b: Batch) -> tuple[int, int]:
    """Policy tokens and turns over all the batch's paths: the losses' normalisers."""
    return int(b.mask.sum()), sum(int(r.max()) + 1 for r in b.turns if bool((r >= 0).any()))


def grpo(logp_BT, b: Batch, rows=slice(None), num_tokens=None):
    """GRPO with a 0.1 clip, normalised by every path's policy tokens (or ``num_tokens``)."""
    width = logp_BT.shape[1]
    num_tokens = num_tokens or counts(b)[0]
    return grpo_loss(logp_BT, b.old[rows, :width], b.adv[rows], b.mask[rows, :width], eps_low=0.1,
                     eps_high=0.1, num_tokens=num_tokens)  # fmt: skip


def turn_gspo(logp_BT, b: Batch, rows=slice(None), num_turns=None):
    """Turn-level GSPO with IcePop and a 0.1 clip, normalised by every path's turns (or ``num_turns``)."""
    width = logp_BT.shape[1]
    num_turns = num_turns or counts(b)[1]
    return turn_gspo_loss(logp_BT, b.old[rows, :width], b.adv[rows], b.mask[rows, :width],
                          b.turns[rows, :width], eps_low=0.1, eps_high=0.1,
                          icepop_BT=b.icepop[rows, :width], num_turns=num_turns)  # fmt: skip


LOSSES = {"grpo": grpo, "turn_gspo": turn_gspo}


def tree_rows(m, tree: FlatTree) -> torch.Tensor:
    return gather_paths(tree, tree_logprobs(m, tree, attention="sdpa"))


def path_rows(m, tree: FlatTree) -> list[torch.Tensor]:
    """Each path run alone, ``(1, T_p - 1)``."""
    out = []
    for p in tree.paths:
        ids = tree.input_ids[p][None]
        out.append(token_logprobs(m, ids, torch.ones_like(ids)))
    return out


def linear_loss(loss_fn, rows: list[torch.Tensor], b: Batch) -> torch.Tensor:
    """Linearised training: the paths' losses summed (each already over the global normaliser)."""
    return sum(loss_fn(r, b, slice(p, p + 1))[0] for p, r in enumerate(rows))


def grads(m, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    names, params = zip(*m.named_parameters(), strict=True)
    return dict(zip(names, torch.autograd.grad(loss, params, allow_unused=True), strict=True))


def assert_grads_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """``||got - want|| <= RTOL ||want||`` for every parameter, and the gradient is not all zero."""
    assert sum(float(w.norm()) for w in want.values() if w is not None) > 0
    for name, w in want.items():
        g = got[name]
        if w is None:
            assert g is None, name
            continue
        err = float((g - w).norm())
        assert err <= RTOL * float(w.norm()), (
            f"{name}: ||g_tree - g_lin|| = {err:.3g}, ||g_lin|| = {float(w.norm()):.3g}"
        )


def assert_logprobs_close(m, tree: FlatTree) -> None:
    got = tree_rows(m, tree)
    valid = path_valid(tree)
    for p, want in enumerate(path_rows(m, tree)):
        width = want.shape[1]
        assert int(valid[p].sum()) == width and not bool(valid[p, width:].any())
        torch.testing.assert_close(got[p, :width], want[0], rtol=RTOL, atol=0, msg=f"path {p}")


def assert_loss_grads_close(m, tree: FlatTree, loss_fn, seed: int, rollout_BT=None) -> None:
    rows = tree_rows(m, tree)
    b = batch(tree, rows, seed, rollout_BT)
    loss, metrics = loss_fn(rows, b)
    assert 0 < metrics["clip_frac"] < 1, metrics  # the clip is active on some tokens or turns, not all
    if "icepop_masked_frac" in metrics:
        assert 0 < metrics["icepop_masked_frac"] < 1, metrics
    lin_loss = linear_loss(loss_fn, path_rows(m, tree), b)
    torch.testing.assert_close(loss, lin_loss, rtol=RTOL, atol=1e-7)
    assert_grads_close(grads(m, loss), grads(m, lin_loss))


# --- random trees ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_tree_reads_back_every_path(shape):
    """Each path's ids, loss mask, rollout log-probs and positions read back from the tree."""
    tree, paths = grown(shape, 1)
    for idx, path in zip(tree.paths, paths, strict=True):
        assert tree.input_ids[idx].tolist() == [t[0] for t in path]
        assert tree.loss_mask[idx].tolist() == [t[1] for t in path]
        want = torch.tensor([float("nan") if t[2] is None else t[2] for t in path])
        torch.testing.assert_close(tree.rollout_logprobs[idx], want, equal_nan=True)
        assert tree.position_ids[idx].tolist() == list(range(len(path)))
    assert tree.path_tokens == sum(len(p) for p in paths)
    if shape == "chain":
        assert tree.sharing_ratio == 1.0
    else:
        assert tree.sharing_ratio > 1.0
    assert 50 <= tree.num_tokens <= 600  # short: the file runs in well under a minute


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_tree_logprobs_equal_each_path_alone(shape, name):
    """One forward over the tree gives every path's log-probs as running the path alone."""
    tree, _ = grown(shape, 1)
    assert_logprobs_close(model(name), tree)


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_tree_gradients_equal_linearised_training(shape, name, loss):
    """A clipped per-path loss on the tree has the gradient of the same loss summed over paths."""
    tree, _ = grown(shape, 2)
    rollout = gather_paths(tree, tree.rollout_logprobs, fill=float("nan"))
    assert_loss_grads_close(model(name), tree, LOSSES[loss], seed=3, rollout_BT=rollout)


@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_dense_mask_is_ancestors_and_self(shape):
    """``dense_tree_mask`` holds exactly each token's ancestors (by ``parent``) and itself."""
    tree, _ = grown(shape, 4)
    n = tree.num_tokens
    want = torch.zeros(n, n, dtype=torch.bool)
    for q in range(n):
        k = q
        while k >= 0:
            want[q, k] = True
            k = int(tree.parent[k])
    assert torch.equal(dense_tree_mask(tree.subtree_end), want)


# --- trees recorded from real scaffold runs -------------------------------------------------------

RECORDED = ("mini-oracle", "claude-code-oracle")


@functools.cache
def recorded(name: str) -> dict:
    (row,) = export_tree([load(name)])
    return row


def rendered(record: dict, call_id: str) -> list[int]:
    """A path's tokens, rendered on their own from its last call."""
    call = next(c for c in decode_calls(record) if c.call_id == call_id)
    messages = [m for group in chat_messages(call.messages, call.request) for m in group]
    return [t for text, _ in render_chat(messages) for t in byte_tokens(text)]


def cropped(tree: FlatTree, head: int = 96, before_branch: int = 160) -> FlatTree:
    """The tree with the middle of its shared trunk cut out: the first ``head`` tokens and the last
    ``before_branch`` before the first branch point kept, every branch whole (the recorded trees
    run to 2,300 tokens; cropped they train in well under a second)."""
    seqs = [(tree.input_ids[p].tolist(), tree.loss_mask[p].long().tolist()) for p in tree.paths]
    first = seqs[0][0]
    trunk = min(len(ids) for ids, _ in seqs)
    for ids, _ in seqs[1:]:
        trunk = min(
            trunk, next((i for i, (a, b) in enumerate(zip(ids, first, strict=False)) if a != b), trunk)
        )
    stop = max(head, trunk - before_branch)
    kept = [(ids[:head] + ids[stop:], mask[:head] + mask[stop:]) for ids, mask in seqs]
    return FlatTree.from_sequences([(ids, mask, [None] * len(ids)) for ids, mask in kept])


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_tree_reads_back_the_exporters_paths(name):
    """``from_row`` of a recorded episode's tree gives back every path the agent's calls rendered."""
    row = recorded(name)
    tree = FlatTree.from_row(row)
    record = load(name)
    assert len(tree.paths) == len(row["paths"])
    for idx, calls in zip(tree.paths, row["paths"], strict=True):
        assert tree.input_ids[idx].tolist() == rendered(record, calls[-1])
    assert tree.path_tokens == row["path_tokens"]
    assert tree.sharing_ratio >= 1.0
    if name == "claude-code-oracle":  # the rewritten turn branches: most of the prompt is shared
        assert tree.sharing_ratio > 1.5
    small = cropped(tree)
    assert small.num_tokens < 600 and len(small.paths) == len(tree.paths)
    assert small.sharing_ratio >= 1.0 and int(small.loss_mask.sum()) > 20


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("episode", RECORDED)
def test_recorded_tree_logprobs_and_gradients_equal_linearised(episode, name):
    """On recorded (cropped) trees, log-probs and both losses' gradients equal the paths' own."""
    tree = cropped(FlatTree.from_row(recorded(episode)))
    m = model(name, 256)  # byte tokens
    assert_logprobs_close(m, tree)
    for i, loss_fn in enumerate(LOSSES.values()):
        assert_loss_grads_close(m, tree, loss_fn, seed=5 + i)


# --- MCLA on a tree -------------------------------------------------------------------------------


def test_mcla_on_the_tree_equals_mcla_per_path_without_noise():
    """With the routers' noise at 0, MCLA over the tree gives each path's MCLA log-probs."""
    m = model("tiny-moe")
    tree, _ = grown("subagents", 6)
    with torch.no_grad(), stochastic_routing(m, noise=0.0, generator=torch.Generator().manual_seed(0)):
        got = gather_paths(tree, mcla_logprobs(lambda: tree_logprobs(m, tree, attention="sdpa"), 3))
        for p, idx in enumerate(tree.paths):
            ids = tree.input_ids[idx][None]
            want = mcla_logprobs(lambda ids=ids: token_logprobs(m, ids, torch.ones_like(ids)), 3)
            torch.testing.assert_close(got[p, : want.shape[1]], want[0], rtol=RTOL, atol=0)


def test_mcla_on_the_tree_with_noisy_routing_averages_the_noise_down():
    """With noisy routing MCLA over the tree is finite, zero at roots, and its variance falls with K."""
    m = model("tiny-moe")
    tree, _ = grown("fan", 7)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), stochastic_routing(m, noise=1.0, generator=g):
        one = torch.stack([tree_logprobs(m, tree, attention="sdpa") for _ in range(6)])
        four = torch.stack(
            [mcla_logprobs(lambda: tree_logprobs(m, tree, attention="sdpa"), 4) for _ in range(6)]
        )
    assert four.shape == (6, tree.num_tokens) and bool(four.isfinite().all())
    assert bool((four[:, tree.parent < 0] == 0).all())
    var_one, var_four = one.var(0).mean(), four.var(0).mean()
    assert var_one > 0
    assert var_four < 0.5 * var_one  # 1/4 ideally


# --- FSDP2: two ranks, a tree each ----------------------------------------------------------------

WORLD = 2
FSDP_TREES = [("subagents", 8), ("fan", 9)]  # rank r trains tree r


def fsdp_loss(rows, b: Batch, num_tokens: int, num_turns: int, path=slice(None)):
    """GRPO plus turn-level GSPO with IcePop, over the global token and turn counts."""
    return grpo(rows, b, path, num_tokens)[0] + turn_gspo(rows, b, path, num_turns)[0]


def _worker(rank, port, out_dir, batches):
    import torch.distributed as dist

    from reference_trainer.parallelize import global_count, shard_model

    mesh = join(rank, WORLD, port)
    try:
        m = load_model("tiny-dense", vocab_size=VOCAB, seed=0)
        shard_model(m, mesh=mesh)
        tree, _ = grown(*FSDP_TREES[rank])
        b = batches[rank]
        tokens, turns = counts(b)
        num_tokens, num_turns = global_count(tokens, mesh), global_count(turns, mesh)
        loss = fsdp_loss(tree_rows(m, tree), b, num_tokens, num_turns)
        loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total)
        grads = {name: p.grad.full_tensor() for name, p in m.named_parameters()}
        if rank == 0:
            torch.save({"loss": total, "grads": grads, "tokens": num_tokens}, out_dir / "fsdp.pt")
    finally:
        dist.destroy_process_group()


def test_two_fsdp_ranks_with_a_tree_each_equal_linearised_training(tmp_path):
    """Two gloo ranks, each with its own tree on a sharded model: summed gradients equal one
    process training every path of both trees linearly."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    m = load_model("tiny-dense", vocab_size=VOCAB, seed=0)
    trees = [grown(*spec)[0] for spec in FSDP_TREES]
    batches = [batch(t, tree_rows(m, t), seed=10 + r) for r, t in enumerate(trees)]
    num_tokens = sum(counts(b)[0] for b in batches)
    num_turns = sum(counts(b)[1] for b in batches)
    spawn(_worker, tmp_path, batches, world=WORLD)
    out = torch.load(tmp_path / "fsdp.pt")
    lin = 0.0
    for tree, b in zip(trees, batches, strict=True):
        for p, rows in enumerate(path_rows(m, tree)):
            lin = lin + fsdp_loss(rows, b, num_tokens, num_turns, slice(p, p + 1))
    assert out["tokens"] == num_tokens
    torch.testing.assert_close(out["loss"], lin.detach(), rtol=RTOL, atol=1e-7)
    assert_grads_close(out["grads"], grads(m, lin))


# --- bad input ------------------------------------------------------------------------------------


def small_row() -> dict:
    return flatten(
        [([1, 2, 3, 4], [0, 0, 1, 1], [None, None, -0.5, -0.2]), ([1, 2, 5], [0, 0, 1], [None] * 3)]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("subtree_end"), "has no subtree_end"),
        (lambda r: r.update(parent=r["parent"][:-1]), "differ in length"),
        (lambda r: r.update(logprobs=r["logprobs"][:-1]), "differ in length"),
        (lambda r: r.update(parent=[-1, 3, 1, 2, 1]), "parent must come before its child"),
        (lambda r: r.update(path_ends=[3, 5]), "path end 5 is outside the 5 tokens"),
        (lambda r: r.update(subtree_end=[5, 5, 4, 4, 6]), r"subtree_end\[4\] is 6"),
        (lambda r: r.update(parent=[-1, 0, 1, 1, 2], subtree_end=[5, 5, 5, 4, 5]), "not contiguous"),
    ],
    ids=[
        "missing-key",
        "short-parent",
        "short-logprobs",
        "parent-after-child",
        "path-end",
        "subtree-end",
        "not-dfs",
    ],  # fmt: skip
)
def test_bad_rows_are_refused(change, message):
    """A row that is not a well-formed tree is refused with what is wrong."""
    row = small_row()
    FlatTree.from_row(row)  # well-formed as it is
    change(row)
    with pytest.raises(ConfigError, match=message):
        FlatTree.from_row(row)


def test_nothing_to_pack_and_unknown_attention_are_refused():
    """``pack([])`` and an unknown attention kernel raise ConfigError."""
    with pytest.raises(ConfigError, match="no trees"):
        pack([])
    tree = FlatTree.from_row(small_row())
    with pytest.raises(ConfigError, match="'bogus'"):
        tree_logprobs(model("tiny-dense"), tree, attention="bogus")


def test_the_models_own_attention_kernel_is_restored_after_a_tree_forward():
    """The tree's forward switches to the kernel its mask needs, then back (backward needs no switch)."""
    from reference_trainer.rl import token_logprobs

    model = load_model("tiny-dense", vocab_size=VOCAB, seed=0)
    model.set_attn_implementation("eager")
    paths = [[1, 2, 3, 4, 5], [1, 2, 3, 9, 8, 7]]
    tree = FlatTree.from_sequences([(p, [1] * len(p), [None] * len(p)) for p in paths])
    rows = gather_paths(tree, tree_logprobs(model, tree))
    assert model.config._attn_implementation == "eager"
    rows.sum().backward()
    for i, p in enumerate(paths):
        linear = token_logprobs(model, torch.tensor([p]), None)[0]
        assert torch.allclose(rows[i, : len(p) - 1], linear, atol=1e-5)
