"""The trainer's GPU path (skipped without CUDA): FSDP2 over NCCL with bfloat16 compute and float32
gradient reduction, compiled blocks and log-prob head, and checkpoints of a sharded model, each
against a plain float32 model on the same GPU."""

from __future__ import annotations

import copy
import os

import pytest

from tests.trainer.ranks import free_port

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
pytest.importorskip("transformers", reason="the trainer extra (transformers) is not installed")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from reference_trainer.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from reference_trainer.losses import grpo_loss  # noqa: E402
from reference_trainer.model import load_model  # noqa: E402
from reference_trainer.parallelize import init_distributed, shard_model  # noqa: E402
from reference_trainer.rl import token_logprobs  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def mesh():
    os.environ.setdefault("MASTER_PORT", str(free_port()))  # this process's one-rank group
    mesh = init_distributed("cuda")
    yield mesh
    torch.distributed.destroy_process_group()


def _loss(model, ids, compiled=False):
    logp = token_logprobs(model, ids, None, compiled=compiled)
    adv = torch.tensor([1.0, -0.5], device=ids.device)
    return grpo_loss(logp, logp.detach() - 0.01, adv, torch.ones_like(logp))[0]


def _grads(model):
    return {n.removeprefix("_orig_mod."): (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad)
            for n, p in model.named_parameters()}  # fmt: skip


def _cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0))


# Dynamo reads .grad of FSDP's unsharded (non-leaf) parameters while it traces a block; torch warns.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_fsdp2_bf16_matches_float32(mesh, compiled):
    reference = load_model("tiny-dense", device="cuda").train()
    model = shard_model(copy.deepcopy(reference), mesh=mesh, compile_blocks=compiled).train()
    ids = torch.randint(0, reference.config.vocab_size, (2, 256), device="cuda", generator=None)
    expected, got = _loss(reference, ids), _loss(model, ids, compiled=compiled)
    expected.backward()
    got.backward()
    got, expected = got.item(), expected.item()
    assert abs(got - expected) < 2e-2 * max(1.0, abs(expected))
    ref_grads, grads = _grads(reference), _grads(model)
    assert set(grads) == set(ref_grads)
    for name, grad in grads.items():
        assert grad.dtype == torch.float32, name  # reduced and kept in float32
        assert _cosine(grad, ref_grads[name]) > 0.98, name
    # master weights stay float32 and sharded; compute ran in bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        assert model(input_ids=ids, use_cache=False).logits.dtype == torch.bfloat16


def test_compiled_logprob_head_matches_eager():
    logits = torch.randn(2, 300, 4096, device="cuda", dtype=torch.bfloat16)
    targets = torch.randint(0, 4096, (2, 300), device="cuda")
    from reference_trainer.rl import _compiled_picked_logprobs, picked_logprobs

    for temperature in (1.0, 0.7):
        eager = picked_logprobs(logits, targets, temperature)
        fused = _compiled_picked_logprobs()(logits, targets, temperature)
        assert fused.dtype == torch.float32 and torch.allclose(fused, eager, atol=1e-4, rtol=1e-4)


def test_sharded_checkpoint_loads_into_a_plain_model(mesh, tmp_path):
    model = shard_model(load_model("tiny-dense", device="cuda", seed=1), mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (2, 64), device="cuda")
    _loss(model, ids).backward()
    optimizer.step()
    path = save_checkpoint(tmp_path, model, optimizer, step=1)
    plain = load_model("tiny-dense", device="cuda", seed=2)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-3)
    assert load_checkpoint(path, plain, plain_opt)["step"] == 1
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(p.full_tensor(), q), name


def test_engine_samples_on_the_gpu_with_the_policys_logprobs(tmp_path):
    from reference_trainer.engine.local import LocalEngine, SampleParams
    from reference_trainer.tokenizer import byte_tokenizer

    tokenizer = byte_tokenizer()
    model = load_model("tiny-dense", vocab_size=len(tokenizer), device="cuda")
    engine = LocalEngine.from_model(model, tokenizer, max_new_tokens=16)
    prompts = [tokenizer.encode("def f(x):"), tokenizer.encode("fix the bug in calc.py")]
    samples = engine.sample(prompts, SampleParams(temperature=0.8, max_new_tokens=16))
    for prompt, sample in zip(prompts, samples, strict=True):
        ids = torch.tensor([prompt + list(sample.token_ids)], device="cuda")
        mask = torch.ones_like(ids)
        with torch.no_grad():
            expected = token_logprobs(model, ids, mask, temperature=0.8)[0, len(prompt) - 1 :]
        assert torch.allclose(torch.tensor(sample.logprobs, device="cuda"), expected, atol=1e-3)


# flex_attention's input checks read .grad of non-leaf tensors while dynamo traces them; torch warns.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_tree_flex_attention_matches_linear_paths():
    """On the GPU the tree mask is a FlexAttention block mask; per-path log-probs and gradients equal
    the linearised paths' (float32)."""
    from reference_trainer.tree import FlatTree, gather_paths, tree_logprobs

    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 500, (300,), generator=g).tolist()
    paths = [prefix[:cut] + torch.randint(0, 500, (40 + 7 * b,), generator=g).tolist()
             for b, cut in enumerate((300, 300, 120, 5))]  # fmt: skip
    tree = FlatTree.from_sequences([(p, [1] * len(p), [None] * len(p)) for p in paths])
    model = load_model("tiny-dense", device="cuda").train()
    rows = gather_paths(tree, tree_logprobs(model, tree, attention="flex").to(torch.float32))
    assert model.config._attn_implementation == "sdpa"  # flex for the tree's forward only
    rows.sum().backward()
    tree_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    total = 0.0
    for i, path in enumerate(paths):
        linear = token_logprobs(model, torch.tensor([path], device="cuda"), None)[0]
        assert torch.allclose(rows[i, : len(path) - 1], linear, atol=1e-4, rtol=1e-4), i
        total = total + linear.sum()
    total.backward()
    for name, p in model.named_parameters():
        assert (tree_grads[name] - p.grad).norm() <= 1e-3 * p.grad.norm() + 1e-6, name
