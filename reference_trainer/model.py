"""Model loading, tiny presets, stochastic MoE routing, and sequence log-probs for the reference trainer.

- :data:`PRESETS` holds configs built offline with random weights: tiny ones for CPU runs and
  tests, ``tiny-dense`` (a Llama-style decoder) and ``tiny-moe`` (Qwen3-MoE: 4 experts, top-2), and
  the shapes of Qwen2-0.5B and Qwen2-1.5B (``qwen2-0.5b``, ``qwen2-1.5b``) for throughput benchmarks.
- :func:`load_model` loads a local Hugging Face model directory, or builds a preset from its config
  with seeded random weights. Nothing is ever downloaded.
- :func:`stochastic_routing` makes an MoE forward pass stochastic by adding Gaussian noise to the
  router logits ("router jitter"). Real serving and training stacks are not deterministic: MoE
  top-k ties flip under non-batch-invariant kernels and atomic ``scatter_add`` orderings, so two
  prefills of the same ids give different log-probs. MCLA (:func:`reference_trainer.losses.mcla_logprobs`,
  K prefills with their log-probs averaged) only reduces variance when the forward is stochastic; with a
  deterministic forward the K answers are identical and K only multiplies the cost. The jitter is a
  controllable stand-in for that noise, so the 1/K variance fall of MCLA can be shown on a CPU.
- :func:`sequence_logprob` sums the next-token log-probs of the masked positions: the trajectory
  log-prob whose difference between two policies is the trajectory log-ratio.

Limits: jitter is added to the router logits only (it changes which experts are picked and their
weights); capacity dropping is not modelled. The noisy router forward re-implements the
``transformers`` 5.x ``*TopKRouter`` logic (softmax, top-k, optional renormalisation) and, for
older-style gates that are a plain ``nn.Linear``, adds the noise with a forward hook.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kwaigym.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

DEFAULT_VOCAB_SIZE = 512
"""Vocabulary of the presets unless ``vocab_size`` is given (tests' byte-level tokenizer has about 400)."""


def _preset_configs() -> dict[str, PretrainedConfig]:
    from transformers import LlamaConfig, Qwen2Config, Qwen3MoeConfig

    common: dict[str, Any] = dict(
        vocab_size=DEFAULT_VOCAB_SIZE,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    # Real shapes with random weights: for throughput benchmarks and memory planning, not for quality.
    qwen2 = dict(vocab_size=151936, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                 tie_word_embeddings=True, rms_norm_eps=1e-6)  # fmt: skip
    return {
        "qwen2-0.5b": Qwen2Config(
            hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, **qwen2
        ),  # fmt: skip
        "qwen2-1.5b": Qwen2Config(
            hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, **qwen2
        ),  # fmt: skip
        "tiny-dense": LlamaConfig(intermediate_size=128, **common),
        "tiny-moe": Qwen3MoeConfig(
            head_dim=16,
            intermediate_size=128,
            moe_intermediate_size=64,
            num_experts=4,
            num_experts_per_tok=2,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            **common,
        ),
    }


PRESETS: tuple[str, ...] = ("tiny-dense", "tiny-moe", "qwen2-0.5b", "qwen2-1.5b")
"""Names accepted by :func:`load_model` besides a local model directory."""


def preset_config(name: str, *, vocab_size: int | None = None) -> PretrainedConfig:
    """A fresh copy of preset ``name``'s config, with ``vocab_size`` overridden when given."""
    configs = _preset_configs()
    if name not in configs:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(configs)}")
    config = copy.deepcopy(configs[name])
    if vocab_size is not None:
        if vocab_size < 1:
            raise ConfigError(f"vocab_size must be positive, got {vocab_size}")
        config.vocab_size = vocab_size
    return config


def load_model(
    path_or_preset: str | Path,
    *,
    vocab_size: int | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> PreTrainedModel:
    """Load a local HF causal-LM directory, or build preset ``path_or_preset`` with seeded random weights.

    A preset is built from config under ``seed`` (the global RNG state is restored afterwards), so the
    same seed gives the same weights. ``vocab_size`` only applies to presets (a directory's config wins);
    ``dtype`` defaults to float32. ``device`` (default CPU) is where a preset's weights are initialised,
    so a 1.5B model is built on the GPU in a second rather than on the CPU in many. The model is
    returned in eval mode.
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    path = Path(path_or_preset)
    if str(path_or_preset) not in PRESETS:
        if not path.is_dir():
            raise ConfigError(
                f"load_model: {str(path_or_preset)!r} is neither a local model directory nor a preset "
                f"({', '.join(PRESETS)})"
            )
        if vocab_size is not None:
            raise ConfigError("load_model: vocab_size applies to presets only")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return model.to(device or "cpu").eval()
    config = preset_config(str(path_or_preset), vocab_size=vocab_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device or "cpu"):
            model = AutoModelForCausalLM.from_config(config)
    return model.to(dtype).eval()


def _is_topk_router(module: torch.nn.Module) -> bool:
    """A transformers 5.x MoE router: owns ``weight``, ``top_k`` and ``num_experts`` and returns
    ``(logits, scores, indices)``."""
    return (
        type(module).__name__.endswith("TopKRouter")
        and hasattr(module, "weight")
        and hasattr(module, "top_k")
        and hasattr(module, "num_experts")
    )


def _router_gates(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    import torch

    found = []
    for name, module in model.named_modules():
        if _is_topk_router(module):
            found.append((name, module))
        elif (
            name.endswith(".gate")
            and isinstance(module, torch.nn.Linear)
            and hasattr(model.config, "num_experts_per_tok")
        ):
            found.append((name, module))  # older-style gate: a Linear to per-expert logits
    return found


def _noisy_router_forward(router, noise: float, generator):
    import torch
    import torch.nn.functional as F

    def forward(hidden_states):
        hidden_states = hidden_states.reshape(-1, router.weight.shape[-1])
        router_logits = F.linear(hidden_states, router.weight, getattr(router, "bias", None))
        jitter = torch.randn(
            router_logits.shape, generator=generator, device=router_logits.device, dtype=torch.float32
        )
        router_logits = router_logits + (noise * jitter).to(router_logits.dtype)
        router_probs = F.softmax(router_logits, dtype=torch.float, dim=-1)
        top_value, top_index = torch.topk(router_probs, router.top_k, dim=-1)
        if getattr(router, "norm_topk_prob", False):
            top_value = top_value / top_value.sum(dim=-1, keepdim=True)
        return router_logits, top_value.to(router_logits.dtype), top_index

    return forward


@contextlib.contextmanager
def stochastic_routing(
    model: torch.nn.Module, *, noise: float = 0.5, generator: torch.Generator | None = None
) -> Iterator[int]:
    """Within the block, add ``noise * N(0, 1)`` to every MoE router logit on each forward pass.

    Each token of each sequence in each call gets fresh noise, so the rows of a batch are independent
    draws. ``generator`` (default: the global RNG) makes the draws reproducible. Yields the number of
    routers patched; raises :class:`ConfigError` if the model has none (a dense model cannot be made
    stochastic this way) or ``noise`` is negative. ``noise=0`` patches nothing and leaves the forward
    deterministic. The original forwards are restored on exit, also on error.
    """
    if noise < 0:
        raise ConfigError(f"stochastic_routing: noise must be >= 0, got {noise}")
    gates = _router_gates(model)
    if not gates:
        raise ConfigError(f"stochastic_routing: {type(model).__name__} has no MoE router to jitter")
    if noise == 0:
        yield 0
        return
    import torch

    undo = []
    try:
        for _, gate in gates:
            if _is_topk_router(gate):
                gate.forward = _noisy_router_forward(gate, noise, generator)
                undo.append(lambda g=gate: g.__dict__.pop("forward", None))
            else:

                def hook(_module, _inputs, output):
                    jitter = torch.randn(output.shape, generator=generator, device=output.device)
                    return output + (noise * jitter).to(output.dtype)

                undo.append(gate.register_forward_hook(hook).remove)
        yield len(gates)
    finally:
        for fn in undo:
            fn()


def sequence_logprob(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed log-probs of the masked tokens of each sequence, shape ``(B,)``, float32.

    ``mask`` has ``input_ids``'s shape ``(B, T)``: 1 on the tokens to score (e.g. policy-generated
    ones). Token ``t`` is scored by the logits at ``t - 1`` (next-token alignment), so ``mask[:, 0]``
    must be 0 (nothing predicts the first token). ``attention_mask`` (default: all ones) is passed to
    the model for right padding. Gradients flow when enabled; call under ``torch.no_grad()`` to measure.
    """
    import torch

    if input_ids.dim() != 2 or mask.shape != input_ids.shape:
        raise ConfigError(
            f"sequence_logprob: input_ids must be (B, T) and mask the same shape, got "
            f"{tuple(input_ids.shape)} and {tuple(mask.shape)}"
        )
    if bool(mask[:, 0].any()):
        raise ConfigError("sequence_logprob: mask[:, 0] must be 0: the first token has no prediction")
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    keep = mask[:, 1:].bool()
    return torch.where(keep, logp, torch.zeros((), dtype=logp.dtype, device=logp.device)).sum(-1)
