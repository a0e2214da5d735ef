"""Trainer checkpoints: exact resume, invisible interrupted saves, N ranks load on M, HF exports load."""

from __future__ import annotations

import pytest

from tests.trainer.ranks import join, spawn

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
pytest.importorskip("transformers", reason="the trainer extra (transformers) is not installed")
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kwaigym.errors import ConfigError  # noqa: E402
from reference_trainer.checkpoint import (  # noqa: E402
    META_FILE,
    export_hf,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from reference_trainer.model import load_model, preset_config  # noqa: E402

WORLD = 2
LR = 1e-2


def tokens():
    """A fixed batch of 4 sequences of 12 tokens."""
    return torch.randint(0, 512, (4, 12), generator=torch.Generator().manual_seed(3))


def fresh(preset="tiny-dense", seed=0):
    """A preset model in train mode and its AdamW."""
    model = load_model(preset, seed=seed).train()
    return model, torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)


def train_step(model, optimizer, rows=slice(None)):
    """One AdamW step on next-token cross-entropy of ``rows`` of the batch, normalised by the whole batch's
    token count, so gradients summed over ranks holding disjoint rows equal the 1-process gradient."""
    batch = tokens()
    ids = batch[rows]
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
    (loss / batch[:, 1:].numel()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def assert_same_params(a, b, atol=0.0):
    pb = dict(b.named_parameters()) if isinstance(b, torch.nn.Module) else b
    for name, p in a.named_parameters():
        torch.testing.assert_close(p.detach(), pb[name].detach(), rtol=0, atol=atol, msg=name)


def test_resume_is_exact(tmp_path):
    """Save after 2 steps, load into a fresh model and optimizer: a further step on each ends equal."""
    model, opt = fresh()
    for _ in range(2):
        train_step(model, opt)
    path = save_checkpoint(tmp_path, model, opt, step=2, extra={"epoch": 1, "note": "x"})
    assert path == tmp_path / "step_000002"
    other, other_opt = fresh(seed=1)  # different weights, empty optimizer state
    meta = load_checkpoint(path, other, other_opt)
    assert meta == {"step": 2, "extra": {"epoch": 1, "note": "x"}}
    assert_same_params(other, model)
    train_step(model, opt)
    train_step(other, other_opt)
    assert_same_params(other, model)


def test_interrupted_save_is_ignored(tmp_path):
    """A '.tmp' directory (a save that did not finish) is skipped by latest_checkpoint and refused by load."""
    model, opt = fresh()
    assert latest_checkpoint(tmp_path / "nothing") is None
    save_checkpoint(tmp_path, model, opt, step=1)
    save_checkpoint(tmp_path, model, opt, step=2)
    crashed = save_checkpoint(tmp_path, model, opt, step=3).rename(tmp_path / "step_000003.tmp")
    (crashed / META_FILE).unlink()  # as if rank 0 died before writing the metadata and renaming
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000002"
    with pytest.raises(ConfigError, match=r"interrupted save.*latest_checkpoint"):
        load_checkpoint(crashed, model, opt)
    crashed.rename(tmp_path / "step_000004")  # complete-looking name, but no metadata
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000002"
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "step_000004", model, opt)


def test_load_missing_or_root_directory_says_what_to_do(tmp_path):
    """A missing directory is named; a checkpoint root points to latest_checkpoint."""
    model, opt = fresh()
    with pytest.raises(ConfigError, match=r"no checkpoint at .*step_000009.*latest_checkpoint"):
        load_checkpoint(tmp_path / "step_000009", model, opt)
    save_checkpoint(tmp_path, model, opt, step=5)
    with pytest.raises(ConfigError, match="looks like a checkpoint root"):
        load_checkpoint(tmp_path, model, opt)


def test_resave_same_step_replaces(tmp_path):
    """Saving a step that exists replaces it with the new state."""
    model, opt = fresh()
    save_checkpoint(tmp_path, model, opt, step=7, extra={"v": 1})
    train_step(model, opt)
    save_checkpoint(tmp_path, model, opt, step=7, extra={"v": 2})
    other, other_opt = fresh(seed=1)
    assert load_checkpoint(tmp_path / "step_000007", other, other_opt)["extra"] == {"v": 2}
    assert_same_params(other, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000007"]


def test_mismatched_parameters_are_refused(tmp_path):
    """Loading a checkpoint into another architecture names the missing and unexpected parameters."""
    model, opt = fresh("tiny-dense")
    path = save_checkpoint(tmp_path, model, opt, step=1)
    moe, moe_opt = fresh("tiny-moe")
    with pytest.raises(ConfigError, match=r"do not match the model: \d+ missing .*mlp\.experts"):
        load_checkpoint(path, moe, moe_opt)


def test_model_only_checkpoint(tmp_path):
    """optimizer=None saves and loads weights only; asking it for optimizer state is refused."""
    model, opt = fresh()
    train_step(model, opt)
    path = save_checkpoint(tmp_path, model, None, step=1)
    other, other_opt = fresh(seed=1)
    with pytest.raises(ConfigError, match="without optimizer state"):
        load_checkpoint(path, other, other_opt)
    load_checkpoint(path, other, None)
    assert_same_params(other, model)


def test_extra_must_be_json(tmp_path):
    """Non-JSON extra is refused before anything is written."""
    model, opt = fresh()
    with pytest.raises(ConfigError, match="JSON"):
        save_checkpoint(tmp_path, model, opt, step=1, extra={"t": torch.zeros(1)})
    assert list(tmp_path.iterdir()) == []


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "world": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def assert_same_logits(model, directory):
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(directory).eval()
    model.eval()
    with torch.no_grad():
        want = model(input_ids=tokens()).logits
        got = loaded(input_ids=tokens()).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("preset,tied", [("tiny-dense", False), ("tiny-moe", False), ("tiny-dense", True)])
def test_export_hf_loads_with_same_logits(tmp_path, preset, tied):
    """export_hf writes safetensors + config + tokenizer that from_pretrained loads to the same logits."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = preset_config(preset)
    config.tie_word_embeddings = tied
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    out = export_hf(tmp_path / "hf", model, tiny_tokenizer())
    weights = sorted(p.name for p in out.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    assert weights == ["model.safetensors"]
    with safe_open(out / "model.safetensors", "pt") as f:
        assert ("lm_head.weight" in f.keys()) is not tied  # a tied head is stored once, as the embedding
    assert AutoTokenizer.from_pretrained(out)("hello world")["input_ids"] == [1, 2]
    assert_same_logits(model, out)


def test_export_hf_refuses_foreign_directory(tmp_path):
    """An existing directory that is not a model export is not overwritten."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a model export"):
        export_hf(tmp_path, load_model("tiny-dense"))
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --- 2 FSDP2 ranks (gloo on loopback) -------------------------------------------------------------


def _worker(rank, port, tmp):
    from reference_trainer.parallelize import shard_model

    mesh = join(rank, WORLD, port)
    try:
        model, opt = fresh(seed=1)
        shard_model(model, mesh=mesh)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)  # over the sharded parameters
        meta = load_checkpoint(latest_checkpoint(tmp / "one"), model, opt)  # saved by 1 process: 1 -> 2 ranks
        train_step(model, opt, rows=slice(2 * rank, 2 * rank + 2))
        save_checkpoint(tmp / "two", model, opt, step=meta["step"] + 1, extra={"world": WORLD})
        export_hf(tmp / "hf", model)
        full = {name: p.full_tensor() for name, p in model.named_parameters()}
        if rank == 0:
            torch.save({"params": full, "meta": meta}, tmp / "ranks.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """1 process trains 2 steps and saves; 2 ranks load it, step once on half the batch each, save and export.

    Returns the directory, the 1-process model after the same 3 steps, and rank 0's gathered results.
    """
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")

    tmp = tmp_path_factory.mktemp("ckpt")
    model, opt = fresh()
    for _ in range(2):
        train_step(model, opt)
    save_checkpoint(tmp / "one", model, opt, step=2)
    train_step(model, opt)  # the uninterrupted run
    spawn(_worker, tmp, world=WORLD)
    return tmp, model, torch.load(tmp / "ranks.pt")


def test_one_process_checkpoint_loads_on_two_ranks(two_ranks):
    """Resuming a 1-process checkpoint on 2 FSDP2 ranks continues the same run (to float rounding)."""
    _, model, ranks = two_ranks
    assert ranks["meta"] == {"step": 2, "extra": {}}
    assert_same_params(model, ranks["params"], atol=1e-6)


def test_two_rank_checkpoint_loads_in_one_process(two_ranks):
    """A checkpoint saved by 2 FSDP2 ranks loads into a plain model: exactly the gathered parameters."""
    tmp, _, ranks = two_ranks
    other, other_opt = fresh(seed=2)
    meta = load_checkpoint(latest_checkpoint(tmp / "two"), other, other_opt)
    assert meta == {"step": 3, "extra": {"world": WORLD}}
    assert_same_params(other, ranks["params"])
    assert len(other_opt.state) == len(list(other.parameters()))  # the optimizer state came along


def test_export_from_two_ranks_matches_unsharded(two_ranks):
    """export_hf from 2 sharded ranks gives a directory with the logits of the unsharded model."""
    tmp, _, ranks = two_ranks
    model = load_model("tiny-dense")
    model.load_state_dict(ranks["params"])
    assert [p.suffix for p in (tmp / "hf").iterdir() if p.name.startswith("model")] == [".safetensors"]
    assert_same_logits(model, tmp / "hf")
