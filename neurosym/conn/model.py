"""The compiled network: a plain residual transformer whose weights are set by ``compiler.py``.

Token and position embeddings write a residual stream of width ``d_model``; each layer is either
multi-head attention or an MLP and adds its output to the stream (no layer norm); an unembedding reads
the output variable. Every weight is an ``nn.Linear``/``nn.Embedding`` parameter, bias-free: constant
terms ride on the residual dimension ``ONE``, which is 1 at every real position and 0 at BOS, so nothing
is ever written at BOS. ``forward`` is tensor arithmetic only.

A compiled layer reads and writes only a few residual dimensions (the blocks of its inputs and of its
output); its full ``d_model``-wide weight matrices would be zero elsewhere. Each layer therefore stores
its matrices restricted to those dimensions (index buffers ``*_dims``), which is the same linear map and
an order of magnitude cheaper than multiplying by the zeros.

The MLP nonlinearity is ``hardtanh`` clamped to [0, 1], a saturating ReLU: the compiler puts every
pre-activation at least 1 away from the [0, 1] band, so each hidden unit outputs exactly 0 or 1 and
float rounding cannot change a result.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ONE, BOS = 0, 1  # fixed residual dimensions


def _dims(dims: list[int]) -> torch.Tensor:
    return torch.tensor(dims, dtype=torch.long)


class AttentionHead(nn.Module):
    """One head: scores = (W_q x_q) . (W_k x_k) (the compiler bakes in the scale), softmax over the
    unmasked keys, output the weighted mean of W_ov x_k (value and output projections in one matrix)."""

    def __init__(self, query_dims: list[int], key_dims: list[int], value_dims: list[int], d_head: int,
                 n_out: int):
        super().__init__()
        self.register_buffer("query_dims", _dims(query_dims))
        self.register_buffer("key_dims", _dims(key_dims))
        self.register_buffer("value_dims", _dims(value_dims))
        self.q = nn.Linear(len(query_dims), d_head, bias=False)
        self.k = nn.Linear(len(key_dims), d_head, bias=False)
        self.ov = nn.Linear(len(value_dims), n_out, bias=False)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        q = self.q(x[..., self.query_dims])
        k = self.k(x[..., self.key_dims])
        scores = (q @ k.transpose(-1, -2)).masked_fill(~key_mask, float("-inf"))  # key_mask: [B, 1 or T, T]
        return torch.softmax(scores, dim=-1) @ self.ov(x[..., self.value_dims])


class Attention(nn.Module):
    """Several heads reading the same residual stream; each adds its output to its own dimensions."""

    def __init__(self, heads: list[AttentionHead], write_dims: list[int]):
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.register_buffer("write_dims", _dims(write_dims))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        out = torch.cat([head(x, key_mask) for head in self.heads], dim=-1)
        return x.index_add_(-1, self.write_dims, out)  # in place: x is this forward pass's own stream


class MLP(nn.Module):
    """Lookup tables: ``x + W_out hardtanh_[0,1](W_in x)``."""

    def __init__(self, read_dims: list[int], d_hidden: int, write_dims: list[int]):
        super().__init__()
        self.register_buffer("read_dims", _dims(read_dims))
        self.register_buffer("write_dims", _dims(write_dims))
        self.fc_in = nn.Linear(len(read_dims), d_hidden, bias=False)
        self.fc_out = nn.Linear(d_hidden, len(write_dims), bias=False)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = F.hardtanh(self.fc_in(x[..., self.read_dims]), 0.0, 1.0)
        return x.index_add_(-1, self.write_dims, self.fc_out(hidden))


class CompiledTransformer(nn.Module):
    """Embeddings, a stack of residual attention/MLP layers, and an unembedding.

    ``forward(ids, mask)``: ``ids`` [B, T] are input ids with BOS (id 0) at position 0 and right padding
    (id 1); ``mask`` [B, T] is True at BOS and real tokens. Returns [B, T, n_classes] scores that are
    exactly one-hot at real positions (the output value's class, or the last class for "no value").
    """

    def __init__(self, n_ids: int, max_len: int, d_model: int, layers: list[nn.Module], n_classes: int,
                 causal: bool = False):
        super().__init__()
        self.causal = causal  # a decoder: each position attends only to itself and the positions before it
        if causal:
            self.register_buffer("causal_mask", torch.ones(max_len + 1, max_len + 1, dtype=torch.bool).tril())
        self.token_embed = nn.Embedding(n_ids, d_model)
        self.position_embed = nn.Embedding(max_len + 1, d_model)
        self.layers = nn.ModuleList(layers)
        self.unembed = nn.Linear(d_model, n_classes, bias=False)
        for p in self.parameters():
            p.requires_grad_(False)

    def attention_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """[B, 1, T] (every real key) or, causal, [B, T, T] (real keys at or before the query)."""
        keys = mask[:, None, :]
        if self.causal:
            keys = keys & self.causal_mask[: mask.shape[1], : mask.shape[1]]
        return keys

    def residual(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.token_embed(ids) + self.position_embed(positions)[None]
        keys = self.attention_mask(mask)
        for layer in self.layers:
            x = layer(x, keys)
        return x

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.unembed(self.residual(ids, mask))
