"""A tiny random causal LM with the reference trainer's byte-level tokenizer, built on the spot:
tests need a real model directory that loads with transformers, and nothing may be downloaded."""

from __future__ import annotations

from pathlib import Path

from reference_trainer.tokenizer import CHAT_TEMPLATE, byte_tokenizer

__all__ = ["CHAT_TEMPLATE", "build_tiny_model"]


def build_tiny_model(path: Path) -> Path:
    """Write a 2-layer Llama (hidden 32) with random weights and :func:`byte_tokenizer` to ``path``.

    Smaller than the ``tiny-dense`` preset, and with no suppressed tokens: tests choose their own."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    tokenizer.save_pretrained(path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=16384, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    return path
