"""FSDP2 sharding on CPU (gloo, loopback): 2 or 4 ranks, each with a share of the batch, match one process."""

from __future__ import annotations

import pytest

from tests.trainer.ranks import join, spawn

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
pytest.importorskip("transformers", reason="the trainer extra (transformers) is not installed")
import torch.distributed as dist  # noqa: E402

from kwaigym.errors import ConfigError  # noqa: E402
from reference_trainer.losses import grpo_loss  # noqa: E402
from reference_trainer.parallelize import decoder_blocks, global_count, shard_model  # noqa: E402

if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

WORLDS = (2, 4)
LENGTHS = [9, 5, 12, 7]  # tokens per sequence before right padding; uneven across ranks on purpose
ADV = [1.0, -0.5, 2.0, -1.5]
# variant: (model, shard_model options); the MoE is the tiny-moe preset (Qwen3-MoE, 4 experts, top-2)
OPTIONS = {
    "plain": ("dense", {}),
    "checkpointed": ("dense", {"activation_checkpointing": True, "reshard_after_forward": False}),
    "moe": ("moe", {}),
}


def build(kind: str):
    """The variant's model, seeded: the 2-layer Llama, or the tiny-moe preset with vocabulary 128."""
    if kind == "moe":
        from reference_trainer.model import load_model

        return load_model("tiny-moe", vocab_size=128, seed=0).train()
    return tiny_llama()


def tiny_llama():
    """A 2-layer Llama, hidden 32, vocab 128, float32, seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)  # fmt: skip
    return LlamaForCausalLM(config).float().train()


def batch():
    """Right-padded tokens and attention mask, old log-probs and advantages for 4 sequences."""
    g = torch.Generator().manual_seed(1)
    width = max(LENGTHS)
    tokens = torch.randint(0, 128, (len(LENGTHS), width), generator=g)
    attn = torch.zeros(len(LENGTHS), width, dtype=torch.long)
    for i, n in enumerate(LENGTHS):
        attn[i, :n] = 1
    noise = 0.1 * torch.randn(len(LENGTHS), width - 1, generator=g)
    return tokens, attn, noise, torch.tensor(ADV)


def loss_on(model, rows, num_tokens=None):
    """GRPO loss of ``model`` on sequences ``rows``; the prompt is each sequence's first 2 tokens."""
    tokens, attn, noise, adv = (t[rows] for t in batch())
    logits = model(input_ids=tokens, attention_mask=attn, use_cache=False).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    mask = attn[:, 1:].clone()
    mask[:, :1] = 0  # the second token is still prompt
    old = logp.detach() + noise  # a fixed, slightly off-policy old policy so the ratios are not all 1
    return grpo_loss(logp, old, adv, mask, num_tokens=num_tokens)


def _worker(rank, port, out_dir, world):
    mesh = join(rank, world, port)
    per_rank = len(LENGTHS) // world
    try:
        for key, (kind, options) in OPTIONS.items():  # one spawn for all: starting a worker costs ~10 s
            model = build(kind)
            model.load_state_dict(torch.load(out_dir / f"{kind}.state.pt"))
            shard_model(model, mesh=mesh, **options)
            rows = slice(per_rank * rank, per_rank * (rank + 1))
            with torch.no_grad():
                _, metrics = loss_on(model, rows)  # only to count this rank's tokens
            n_global = global_count(int(metrics["tokens"]), mesh)
            loss, _ = loss_on(model, rows, num_tokens=n_global)
            loss.backward()
            total = loss.detach().clone()
            dist.all_reduce(total)
            grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}
            checkpointed = all(getattr(b, "gradient_checkpointing", False) for b in model.model.layers)
            if rank == 0:
                out = {"loss": total, "grads": grads, "tokens": n_global, "checkpointed": checkpointed}
                torch.save(out, out_dir / f"{key}-{world}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per model kind, the 1-process model with its loss and gradients; each variant's results on
    each world size (one spawn per world size runs every variant)."""

    tmp = tmp_path_factory.mktemp("fsdp")
    single = {}
    for kind in {kind for kind, _ in OPTIONS.values()}:
        model = build(kind)
        torch.save(model.state_dict(), tmp / f"{kind}.state.pt")
        loss, metrics = loss_on(model, slice(0, 4))
        loss.backward()
        single[kind] = (model, loss.detach(), metrics)
    results = {}
    for world in WORLDS:
        spawn(_worker, tmp, world, world=world)
        results.update({(key, world): torch.load(tmp / f"{key}-{world}.pt") for key in OPTIONS})
    return single, results


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("key", list(OPTIONS))
def test_ranks_match_one(runs, key, world):
    """Loss summed over 2 or 4 FSDP ranks and the gathered gradients equal the 1-process ones to 1e-5."""
    single, results = runs
    kind, options = OPTIONS[key]
    model, loss, metrics = single[kind]
    out = results[key, world]
    assert out["tokens"] == metrics["tokens"] == sum(n - 2 for n in LENGTHS)
    assert out["checkpointed"] == options.get("activation_checkpointing", False)
    torch.testing.assert_close(out["loss"], loss, rtol=0, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(out["grads"][name], p.grad, rtol=0, atol=1e-5, msg=name)


def test_decoder_blocks_found_by_class_name():
    """Without model.model.layers, the blocks are the modules named '*DecoderLayer'."""

    class MyDecoderLayer(torch.nn.Linear):
        pass

    model = torch.nn.Sequential(MyDecoderLayer(2, 2), torch.nn.ReLU(), MyDecoderLayer(2, 2))
    assert decoder_blocks(model) == [model[0], model[2]]
    with pytest.raises(ConfigError, match="no decoder blocks"):
        decoder_blocks(torch.nn.Linear(2, 2))


def test_global_count_without_process_group():
    """A single process with no process group counts only itself."""
    assert global_count(7) == 7
