"""A tiny decoder-only transformer over bytes (vocabulary 256): pre-norm blocks, causal attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 256


class Block(nn.Module):
    """Pre-norm causal self-attention and an MLP, each with a residual connection."""

    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        shape = (b, t, self.n_head, d // self.n_head)
        q, k, v = (
            q.view(shape).transpose(1, 2),
            k.view(shape).transpose(1, 2),
            v.view(shape).transpose(1, 2),
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """Next-byte logits for every position of a ``(batch, time)`` tensor of byte values.

    Args:
        block_size: the longest context (learned position embeddings).
        d_model: the width of the residual stream.
        n_layer: transformer blocks.
        n_head: attention heads (must divide ``d_model``).
    """

    def __init__(self, block_size: int, d_model: int, n_layer: int, n_head: int) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"n_head={n_head} must divide d_model={d_model}")
        self.block_size = block_size
        self.tok = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.long()  # byte values; floats too (the registered pyfunc model passes float32)
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))

    @torch.no_grad()
    def generate(self, prompt: bytes, length: int, temperature: float = 1.0) -> bytes:
        """Sample ``length`` bytes after ``prompt`` (for a look at what the model learned)."""
        device = self.head.weight.device
        idx = torch.tensor([list(prompt or b"\n")], dtype=torch.long, device=device)
        for _ in range(length):
            logits = self(idx[:, -self.block_size :])[:, -1].float() / max(temperature, 1e-6)
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1)
            idx = torch.cat([idx, nxt], dim=1)
        return bytes(idx[0, len(prompt or b"\n") :].tolist())
