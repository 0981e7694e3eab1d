"""HashEvict as a kvpress press (NVIDIA kvpress 0.5.x).

    from hashevict.kvpress import HashEvictPress
    press = HashEvictPress(compression_ratio=0.5)
    with press(model):
        model(input_ids, past_key_values=cache)      # or kvpress's pipeline(..., press=press)

kvpress compresses once, after the prefill of the context, layer by layer,
keeping ``int(n * (1 - compression_ratio))`` entries per KV head by top-k of
a score (``ScorerPress``). HashEvict's score for a key is its negative
Hamming distance, in libhashevict's codes (the engine's projection of the
layer, ``hash_bits`` bits), to the codes of the post-RoPE queries of the last
``window_size`` context tokens of its GQA group, averaged over those probes:
the paper's probe with the "accumulated" score over a window instead of one
decode step. It is then average-pooled over ``kernel_size`` neighbouring
positions (as SnapKV does; 1 turns it off); the first ``n_sink`` positions
and the window itself are always kept. Codes come from the library
(``Engine.hash``), so they are bit-identical to the C engine's.

``scorer="knorm"`` swaps the hash score for −‖k‖ with no pooling and no
protection, i.e. KnormPress: it exists to check this press's plumbing
(which keys it sees, per head, in which order) against kvpress's own press.

Not here: the question-aware variant. kvpress's pipeline compresses the
context before the question is appended, so a press never sees the
question's queries (notes/compression.md); with ``window_size`` covering the
question in a single forward over context + question the same class is
question-aware.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from kvpress.presses.scorer_press import ScorerPress
    from kvpress.utils import get_prerope_query_states
    from transformers.models.llama.modeling_llama import rotate_half
except ImportError as exc:  # pragma: no cover - exercised only without the extras
    raise ImportError("hashevict.kvpress needs torch, transformers and kvpress (pip install kvpress)") from exc

from .engine import Engine
from .errors import InvalidArgument

__all__ = ["HashEvictPress", "hamming_scores"]


def _popcount_rows(codes_xor: np.ndarray) -> np.ndarray:
    return np.bitwise_count(codes_xor).sum(axis=-1)


def hamming_scores(key_codes: np.ndarray, query_codes: np.ndarray, group: int) -> np.ndarray:
    """Mean Hamming distance of each key code to the query codes of its
    group. key_codes [n, kv_heads, words], query_codes [w, q_heads, words]
    (uint64); query head j belongs to KV head j // group. Returns
    float32 [kv_heads, n]."""
    n, h, words = key_codes.shape
    w = query_codes.shape[0]
    q = query_codes.reshape(w, h, group, words)
    out = np.empty((h, n), np.float32)
    for head in range(h):
        probes = q[:, head].reshape(w * group, words)  # [P, words]
        d = _popcount_rows(key_codes[:, head, None, :] ^ probes[None, :, :])  # [n, P]
        out[head] = d.mean(axis=1, dtype=np.float64)
    return out


@dataclass
class HashEvictPress(ScorerPress):
    compression_ratio: float = 0.0
    window_size: int = 64
    kernel_size: int = 5
    n_sink: int = 4
    hash_bits: int = 16
    seed: int | None = None
    scorer: str = "hash"
    _engines: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        if self.scorer not in ("hash", "knorm"):
            raise InvalidArgument(f"scorer = {self.scorer!r}; want 'hash' or 'knorm'")
        for name in ("window_size", "kernel_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidArgument(f"{name} = {v!r}; want an int >= 1")
        if isinstance(self.n_sink, bool) or not isinstance(self.n_sink, int) or self.n_sink < 0:
            raise InvalidArgument(f"n_sink = {self.n_sink!r}; want an int >= 0")

    def _engine(self, module) -> Engine:
        cfg = module.config
        key = (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, module.head_dim)
        eng = self._engines.get(key)
        if eng is None:
            # The engine only hashes here; budget and protections are unused.
            eng = Engine(n_layers=key[0], n_q_heads=key[1], n_kv_heads=key[2], head_dim=key[3], budget=64,
                         n_sink=0, n_recent=0, hash_bits=self.hash_bits, seed=self.seed)
            self._engines[key] = eng
        return eng

    def window_queries(self, module, hidden_states, position_embeddings):
        """The post-RoPE queries of the last ``window_size`` tokens, [batch,
        q_heads, w, head_dim] (computed as kvpress's SnapKV does: the press
        hook runs after attention, which does not keep its queries)."""
        w = min(self.window_size, hidden_states.shape[1])
        q = get_prerope_query_states(module, hidden_states[:, -w:])
        cos, sin = position_embeddings
        cos, sin = cos[:, -w:], sin[:, -w:]
        q = q * cos.unsqueeze(1) + rotate_half(q) * sin.unsqueeze(1)
        return q

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        if self.scorer == "knorm":
            return -torch.linalg.vector_norm(keys, dim=-1, dtype=torch.promote_types(keys.dtype, torch.float32))
        b, h, n, d = keys.shape
        eng = self._engine(module)
        layer = module.layer_idx
        q = self.window_queries(module, hidden_states, kwargs["position_embeddings"])
        group = module.config.num_attention_heads // module.config.num_key_value_heads
        out = torch.empty((b, h, n), dtype=torch.float32)
        for row in range(b):
            kc = eng.hash(layer, keys[row].detach().transpose(0, 1).float().cpu().numpy())  # [n, h, words]
            qc = eng.hash(layer, q[row].detach().transpose(0, 1).float().cpu().numpy())  # [w, q_heads, words]
            out[row] = torch.from_numpy(-hamming_scores(kc, qc, group))
        if self.kernel_size > 1:
            out = F.avg_pool1d(out, kernel_size=self.kernel_size, padding=self.kernel_size // 2, stride=1,
                               count_include_pad=False)[..., :n]
        top = torch.finfo(out.dtype).max
        w = min(self.window_size, n)
        out[..., n - w:] = top
        out[..., : self.n_sink] = top
        return out.to(keys.device)
