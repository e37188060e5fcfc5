"""Tiny real GPTs and reference decoders shared by the pipeline and batch tests.

References decode by full recomputation over the whole sequence (no cache), so the cached,
batched paths are checked against the plainest possible implementation.
"""

from __future__ import annotations

import torch

from nanollm.config import ModelConfig
from nanollm.model import GPT
from nanollm.tokenizer import load_tokenizer

BYTE = load_tokenizer("byte")
EOT = 256


def random_model(block_size: int = 48, seed: int = 0) -> GPT:
    """A tiny byte-level GPT with large random weights, so its greedy choices are not ties and
    do not merely repeat the input token. Prepared for inference."""
    torch.manual_seed(seed)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=block_size,
                            vocab_size=257, tokenizer="byte"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5 if "wte" in name or "wpe" in name else 0.3)
    return model.prepare_for_inference()


def scripted_model(prompt: str, output: list[int]) -> GPT:
    """A real GPT whose weights force it to continue `prompt` with `output` (byte tokens).

    Every block's output projections are zero, so the residual stream is wte[token] + wpe[pos];
    wte is the identity (tied, so logits = LayerNorm(x) @ wte^T = LayerNorm(x)) and wpe[pos]
    holds 10 * one-hot(next token), which dominates: argmax at position pos is the token that
    should follow it, whatever the row's content. Past the script the model repeats its input.
    """
    full = (BYTE.encode(prompt) or [EOT]) + output
    n_embd = 264  # >= vocab_size, so every token gets its own dimension
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=n_embd, block_size=len(full) + 8,
                            vocab_size=257, tokenizer="byte"))
    with torch.no_grad():
        for block in model.transformer.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
        model.transformer.wte.weight.copy_(torch.eye(257, n_embd))
        model.transformer.wpe.weight.zero_()
        for pos, nxt in enumerate(full[1:]):
            model.transformer.wpe.weight[pos, nxt] = 10.0
    return model.prepare_for_inference()


@torch.no_grad()
def reference_greedy(model: GPT, ids: list[int], steps: int) -> list[int]:
    """Greedy decoding by full recomputation over the growing sequence (no cache)."""
    idx = torch.tensor([ids])
    out = []
    for _ in range(steps):
        logits, _ = model(idx)  # (1, 1, V) at the last position
        token = int(logits[0, -1].argmax())
        out.append(token)
        idx = torch.cat([idx, torch.tensor([[token]])], dim=1)
    return out


@torch.no_grad()
def reference_sliding_greedy(model: GPT, ids: list[int], steps: int) -> list[int]:
    """Greedy by full recomputation over a window that, once full, restarts from the last
    block_size // 2 tokens: the batch's sliding context, spelled out."""
    block, keep = model.config.block_size, model.config.block_size // 2
    seq, window, out = list(ids), list(ids), []
    for _ in range(steps):
        logits, _ = model(torch.tensor([window]))
        token = int(logits[0, -1].argmax())
        out.append(token)
        seq.append(token)
        window = seq[-keep:] if len(window) == block else [*window, token]
    return out
