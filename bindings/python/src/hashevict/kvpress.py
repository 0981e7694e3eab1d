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

``HashEvictSnapPress`` is the question-aware press, and the one whose
decisions are the C engine's own: each layer's keep-set per KV head comes
from ``hashevict_compress`` (slot mode; the header's "Compress after
prefill"), so Python, the llama.cpp integration and any C runtime keep the
same entries for the same queries and keys. It is question-aware when the
question is part of what is compressed, i.e. the prompt's last
``window_size`` tokens end with the question. kvpress's pipeline compresses
the context *before* it appends the question; its leaderboard runs SnapKV
question-aware by appending the question to the context
(``evaluation/evaluate.py --compress_questions``: context += question,
question = ""), and that is how to use this press::

    pipe(context + question, question="", press=HashEvictSnapPress(compression_ratio=0.5))

Both presses leave sliding-window layers (Gemma 3's ``is_sliding``)
uncompressed: their cache is bounded by the window already, and kvpress
itself skips them for Gemma 3 (only for ``Gemma3ForConditionalGeneration``;
``Gemma3ForCausalLM``, which transformers' GGUF loader builds, would
otherwise have them compressed too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from kvpress.presses.base_press import BasePress
    from kvpress.presses.scorer_press import ScorerPress
    from kvpress.utils import compute_n_kept, get_prerope_query_states
    from transformers.models.llama.modeling_llama import rotate_half
except ImportError as exc:  # pragma: no cover - exercised only without the extras
    raise ImportError("hashevict.kvpress needs torch, transformers and kvpress (pip install kvpress)") from exc

from .engine import Engine, _compress_form
from .errors import InvalidArgument

__all__ = ["HashEvictPress", "HashEvictSnapPress", "hamming_scores", "window_queries"]


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


def window_queries(module, hidden_states, position_embeddings, window: int):
    """The post-RoPE queries of the last ``window`` tokens of
    ``hidden_states`` (the attention layer's input), [batch, q_heads, w,
    head_dim], recomputed as kvpress's SnapKV does: the press hook runs
    after attention, which does not keep its queries."""
    w = min(window, hidden_states.shape[1])
    q = get_prerope_query_states(module, hidden_states[:, -w:])
    cos, sin = position_embeddings
    cos, sin = cos[:, -w:], sin[:, -w:]
    return q * cos.unsqueeze(1) + rotate_half(q) * sin.unsqueeze(1)


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
        q_heads, w, head_dim]."""
        return window_queries(module, hidden_states, position_embeddings, self.window_size)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if getattr(module, "is_sliding", False):
            return keys, values
        return super().compress(module, hidden_states, keys, values, attentions, kwargs)

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


@dataclass
class HashEvictSnapPress(BasePress):
    """Compress after prefill through the C engine (``hashevict_compress``,
    slot mode, probe = query, one call per layer and batch row).

    Each KV head keeps ``int(n * (1 - compression_ratio))`` of the prompt's
    n entries (kvpress's count): the first ``n_sink`` positions, the last
    ``window_size`` (the window, which with the question compressed ends with
    it), then the positions whose estimate is best: per position the mean,
    over the window's post-RoPE queries of the head's GQA group, of
    cos(pi * d / b) for Hamming distance d in the engine's ``hash_bits``-bit
    codes (``form="cosine"``; ``"distance"``: -d; the flags of
    :meth:`hashevict.Sequence.compress`, e.g. ``"cosine+local"``, apply too),
    max-pooled over ``pool`` neighbouring positions (the header's "Compress
    after prefill"). Kept
    entries stay in position order. Where the budget is smaller than sinks +
    window, the window shrinks first (to at least 1 token), then the sinks:
    the library refuses a budget its protected positions exceed.

    ``seed`` fixes the projections (None: the library's default seed), as in
    :class:`hashevict.Engine`; the same seed gives the same codes as any
    engine of the same shape, so :meth:`keep` can be checked against a
    direct ``Sequence.compress``.
    """

    compression_ratio: float = 0.0
    window_size: int = 64
    pool: int = 11
    form: str = "cosine"
    n_sink: int = 4
    hash_bits: int = 16
    seed: int | None = None
    _engine_key: tuple | None = field(default=None, init=False, repr=False)
    _engine_obj: Engine | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        r = self.compression_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
            raise InvalidArgument(f"compression_ratio = {r!r}; want 0 <= ratio < 1")
        for name, low in (("window_size", 1), ("pool", 0), ("n_sink", 0), ("hash_bits", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InvalidArgument(f"{name} = {v!r}; want an int >= {low}")
        if not isinstance(self.form, str):
            raise InvalidArgument(f"form = {self.form!r}; want a form name such as 'cosine' or 'cosine+local'")
        _compress_form(self.form)  # raises InvalidArgument naming the choices

    def _engine(self, module, budget: int, n_sink: int) -> Engine:
        cfg = module.config
        key = (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, module.head_dim, budget, n_sink)
        if self._engine_key != key:
            if self._engine_obj is not None:
                self._engine_obj.close()
            # One engine per prompt length (the budget is an engine parameter);
            # every layer of a prefill shares it. n_recent 0: the window is the
            # recent protection here, as in SnapKV.
            self._engine_obj = Engine(n_layers=key[0], n_q_heads=key[1], n_kv_heads=key[2], head_dim=key[3],
                                      budget=budget, mode="slot", policy="hash", probe="query", n_sink=n_sink,
                                      n_recent=0, hash_bits=self.hash_bits, seed=self.seed)
            self._engine_key = key
        return self._engine_obj

    def keep(self, module, hidden_states, keys, kwargs):
        """The C engine's slots for the prompt's keys, [batch, n, kv_heads]
        int32 (-1: dropped), and the window used. Public so that tests (and
        users) can see the decision without applying it."""
        b, h, n, d = keys.shape
        budget = compute_n_kept(n, self.compression_ratio)
        if budget < 1:
            raise InvalidArgument(f"compression_ratio {self.compression_ratio} keeps no entry of {n}")
        n_sink = min(self.n_sink, budget - 1)
        w = max(1, min(self.window_size, n, budget - min(n_sink, n)))
        eng = self._engine(module, budget, n_sink)
        q = window_queries(module, hidden_states, kwargs["position_embeddings"], w)
        positions = np.arange(n, dtype=np.int32)
        out = np.empty((b, n, h), np.int32)
        for row in range(b):
            seq = eng.sequence(row)
            try:
                k_rows = keys[row].detach().transpose(0, 1).float().cpu().contiguous()  # [n, kv_heads, d]
                q_rows = q[row].detach().transpose(0, 1).float().cpu().contiguous()  # [w, q_heads, d]
                slots = seq.compress(module.layer_idx, q_rows, k_rows, positions, n_window=w, pool=self.pool,
                                     form=self.form)
            finally:
                seq.close()
            out[row] = np.asarray(slots)
        return out, w

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if self.compression_ratio == 0 or getattr(module, "is_sliding", False):
            return keys, values
        slots, _ = self.keep(module, hidden_states, keys, kwargs)
        b, h, n, d = keys.shape
        kept = torch.from_numpy(slots >= 0).permute(0, 2, 1)  # [b, h, n]
        counts = kept.sum(-1)
        if not bool((counts == counts.flatten()[0]).all()):  # the library fills every head to the budget
            raise InvalidArgument(f"hashevict_compress kept {counts.tolist()} entries per head; want equal counts")
        # Nonzero positions in ascending order per (row, head): position order.
        idx = kept.nonzero()[:, 2].view(b, h, -1).to(keys.device)
        idx = idx.unsqueeze(-1).expand(-1, -1, -1, d)
        return keys.gather(2, idx).contiguous(), values.gather(2, idx).contiguous()
