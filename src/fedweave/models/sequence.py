"""Sequence models for next-token prediction: LEAF's character LSTM and a small causal
transformer.

Inputs are token ids ``[B, L]`` (``data.dataset: shakespeare`` stores them as int8; they arrive
as exact float values, like every input, and are turned back into ids here); the vocabulary is
the dataset's classes (LEAF Shakespeare: its 80 characters). Both models predict the token
that follows the sequence from the representation of its last position, so there is one target
per sample and the run's accuracy and loss are the per-token (next-character) accuracy and
cross-entropy of LEAF's Shakespeare task.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedweave.config import ModelConfig
from fedweave.errors import UserError
from fedweave.models.base import dropout, register_model, scaled


def _sequence_length(name: str, input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 1 or input_shape[0] < 1:
        raise UserError(f"model {name!r} needs token-id sequences (L,), e.g. data.dataset="
                        f"shakespeare; got input shape {tuple(input_shape)}")
    return input_shape[0]


def _ids(x: torch.Tensor) -> torch.Tensor:
    """Token ids from the float (or integer) input batch."""
    return x.round().long() if x.is_floating_point() else x.long()


class CharLSTM(nn.Module):
    """LEAF's Shakespeare model (Caldas et al. 2018; McMahan et al. 2017): embedding 8 →
    2-layer LSTM of 256 units → linear to the vocabulary, on the last position's output."""

    def __init__(self, vocab: int, embed: int = 8, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(_ids(x)))
        return self.out(h[:, -1])


class CausalBlock(nn.Module):
    """Pre-norm transformer block (Vaswani et al. 2017; GPT-2's layout): x + MHA(LN(x)) with a
    causal mask, then x + MLP(LN(x)), MLP = Linear(d, 4d) → GELU → Linear(4d, d). Written with
    plain ops (no in-place updates, no buffers) so ``torch.func.vmap`` can batch it."""

    def __init__(self, d: int, heads: int, p: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d),
                                 *dropout(p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        attn = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class CausalTransformer(nn.Module):
    """Token + learned position embeddings, causal blocks, a final LayerNorm and a linear
    head on the last position."""

    def __init__(self, vocab: int, length: int, d: int, heads: int, layers: int,
                 p: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.position = nn.Parameter(torch.randn(length, d) * 0.02)
        self.drop = nn.Sequential(*dropout(p))
        self.blocks = nn.Sequential(*(CausalBlock(d, heads, p) for _ in range(layers)))
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.embed(_ids(x)) + self.position[: x.shape[1]])
        return self.out(self.ln(self.blocks(h))[:, -1])


@register_model("char_lstm", ())
def char_lstm(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LEAF's character LSTM (embedding 8, 2×256 LSTM, linear to the vocabulary). For 80
    characters: 819,920 parameters (PyTorch's LSTM has two biases per gate where LEAF's
    TensorFlow cell has one: 2,048 more than LEAF's 817,872). Runs on the loop engine; the
    vectorized engine runs it through torch's per-sample fallback for ``aten::lstm`` (correct,
    no faster)."""
    _sequence_length("char_lstm", input_shape)
    return CharLSTM(num_classes)


@register_model("transformer", ("width", "dropout"))
def transformer(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A small causal transformer: d = 64 × width (rounded to a multiple of 4 heads), 4 heads,
    2 pre-norm blocks, dropout ``cfg.dropout``; on 80-character sequences with 80 classes and
    width 1: 115,536 parameters. vmap-safe (loop and vectorized engines)."""
    length = _sequence_length("transformer", input_shape)
    d = max(4, 4 * round(scaled(64, cfg.width) / 4))
    return CausalTransformer(num_classes, length, d, 4, 2, cfg.dropout)


__all__ = ["CausalTransformer", "CharLSTM", "char_lstm", "transformer"]
