"""HashEvict as a transformers ``Cache``: a fixed budget of slots per layer
and KV head, decided by libhashevict in slot mode during ``generate``.

    from hashevict.transformers import HashEvictCache
    cache = HashEvictCache(model, budget=256)
    out = model.generate(**inputs, past_key_values=cache, max_new_tokens=64)

Each full-attention layer holds K and V as ``[batch, kv_heads, budget,
head_dim]`` tensors allocated once: evicted entries are overwritten, so the
memory is really bounded (not a mask over a growing cache). Sliding-window
layers (Gemma 3) keep transformers' own sliding cache, which is bounded
already.

**Decode** (one new token): the paper's step. ``hashevict_place`` picks the
slot for the new token before attention (evicting the unprotected slot of
largest Hamming distance to the token's post-RoPE queries), the new K/V are
written there, and the token attends over the occupied slots.

**Prefill** (a forward of n > 1 tokens): the chunk attends over what the
cache holds plus the whole chunk (exact attention, as without eviction),
then the cache is shrunk to the budget by placing the chunk's tokens in
order, ``prefill_chunk`` tokens per ``hashevict_place`` call: each call is
one step of the header's chunk semantics (the call's queries are the probe
set; tokens of a call never evict each other). ``prefill_chunk=1`` is the
paper's decode step for every prompt token. A call the library refuses with
ChunkTooLarge is retried in halves.

**The query.** transformers' attention modules compute the post-RoPE query
inside ``forward`` and call ``past_key_values.update`` right after
``apply_rotary_pos_emb``; no hook sees that query before the update (a
forward pre-hook sees only hidden states, the attention interface runs after
the update). So this module wraps ``apply_rotary_pos_emb`` in the model's
modeling module: the wrapper returns exactly what the original returns and
remembers the rotated query of the calling thread, which the next
``update`` of this cache takes (and checks: batch, head count, token count,
head_dim). Models whose attention does not call a module-level
``apply_rotary_pos_emb`` get a clear error, or use ``probe="key"``.

Limits: rows of a batch must not be padded (the positions are the cache's
own count, the same for every row); the cache is for one ``generate`` (or a
chain of forwards) from empty; beam search reordering is refused.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

import numpy as np

try:
    import torch
    from transformers.cache_utils import Cache, CacheLayerMixin, DynamicSlidingWindowLayer
except ImportError as exc:  # pragma: no cover - exercised only without the extras
    raise ImportError(
        "hashevict.transformers needs torch and transformers (pip install torch 'transformers<5.3'; "
        "tested versions: bindings/python/tests/requirements-ml.txt)"
    ) from exc

from .engine import Engine
from .errors import ChunkTooLarge, InvalidArgument, Unsupported

__all__ = ["HashEvictCache", "HashEvictLayer", "install_query_capture"]

_tls = threading.local()
_WRAPPED = "_hashevict_query_capture"


def install_query_capture(model) -> list[str]:
    """Wraps ``apply_rotary_pos_emb`` in the modeling module of every
    attention module of ``model`` (idempotent) and returns those modules'
    names. The wrapper changes no result."""
    done = []
    for mod in model.modules():
        if not hasattr(mod, "layer_idx") or not hasattr(mod, "head_dim"):
            continue
        modname = type(mod).__module__
        m = sys.modules.get(modname) or importlib.import_module(modname)
        fn = getattr(m, "apply_rotary_pos_emb", None)
        if fn is None:
            continue
        if not getattr(fn, _WRAPPED, False):
            orig = fn

            def wrapped(q, k, *args, __orig=orig, **kwargs):
                q_out, k_out = __orig(q, k, *args, **kwargs)
                _tls.query = q_out
                return q_out, k_out

            setattr(wrapped, _WRAPPED, True)
            wrapped.__wrapped__ = orig
            wrapped.__doc__ = orig.__doc__
            setattr(m, "apply_rotary_pos_emb", wrapped)
        if modname not in done:
            done.append(modname)
    return done


def _take_query():
    q = getattr(_tls, "query", None)
    _tls.query = None
    return q


class HashEvictLayer(CacheLayerMixin):
    """One full-attention layer's slots: K and V ``[batch, kv_heads, budget,
    head_dim]``, the slot mapping kept by the shared :class:`Engine`."""

    is_sliding = False
    is_compileable = False

    def __init__(self, owner: "HashEvictCache", layer_idx: int):
        super().__init__()
        self.owner = owner
        self.layer_idx = layer_idx
        self.seen = 0  # tokens this layer has been given (its next position)
        self.used = 0  # occupied slots: slots fill in ascending order and are never freed

    def lazy_initialization(self, key_states, value_states) -> None:
        b, h, _, d = key_states.shape
        budget = self.owner.budget
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = torch.zeros((b, h, budget, d), dtype=key_states.dtype, device=key_states.device)
        self.values = torch.zeros((b, h, budget, value_states.shape[-1]), dtype=value_states.dtype,
                                  device=value_states.device)
        self.is_initialized = True

    def update(self, key_states, value_states, cache_kwargs: dict[str, Any] | None = None):
        owner = self.owner
        q = _take_query()
        b, h, n, d = key_states.shape
        if owner.probe == "query":
            want = (b, owner.n_q_heads, n, d)
            if q is None or tuple(q.shape) != want:
                got = "nothing" if q is None else f"shape {tuple(q.shape)}"
                raise Unsupported(
                    f"HashEvictCache layer {self.layer_idx}: the post-RoPE query was not captured (got {got}, want "
                    f"{want}); the model's attention must call its module's apply_rotary_pos_emb right before "
                    f"past_key_values.update (see hashevict.transformers), or use probe='key'"
                )
        if h != owner.n_kv_heads or d != owner.head_dim:
            raise InvalidArgument(
                f"HashEvictCache layer {self.layer_idx}: keys have {h} heads of {d}, the cache was built for "
                f"{owner.n_kv_heads} of {owner.head_dim}"
            )
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            owner._ensure_sequences(b)
        elif b != self.keys.shape[0]:
            raise InvalidArgument(f"HashEvictCache: batch changed from {self.keys.shape[0]} to {b}")
        p0 = self.seen
        positions = np.arange(p0, p0 + n, dtype=np.int32)
        # The engine reads host memory: give it host copies of what it reads.
        k_host = key_states.detach().to("cpu", torch.float32) if key_states.device.type != "cpu" else key_states.detach()
        q_host = None
        if q is not None and owner.probe == "query":
            q_host = q.detach().to("cpu", torch.float32) if q.device.type != "cpu" else q.detach()
        if owner._recorder is not None:
            owner._recorder.append((self.layer_idx, None if q_host is None else q_host.clone(), k_host.clone(), p0))

        if n == 1:
            # Decode: evict before attention; the token attends over the budget slots.
            for row in range(b):
                slots, _ = owner._place(row, self.layer_idx, q_host, k_host, row, positions)
                hh = torch.arange(h, device=self.keys.device)
                s = slots[0].to(device=self.keys.device, dtype=torch.long)
                self.keys[row, hh, s] = key_states[row, :, 0]
                self.values[row, hh, s] = value_states[row, :, 0]
            self.seen += 1
            self.used = min(self.used + 1, owner.budget)
            return self.keys[:, :, : self.used], self.values[:, :, : self.used]

        # Prefill chunk: exact attention over the kept slots plus the chunk, then shrink.
        full_k = torch.cat([self.keys[:, :, : self.used], key_states], dim=-2)
        full_v = torch.cat([self.values[:, :, : self.used], value_states], dim=-2)
        for row in range(b):
            start = 0
            step = owner.prefill_chunk
            while start < n:
                c = min(step, n - start)
                try:
                    owner._place(row, self.layer_idx, q_host, k_host, row, positions, start, start + c)
                except ChunkTooLarge:
                    if c == 1:
                        raise
                    step = max(1, c // 2)
                    continue
                start += c
            # Slots keep their K/V unless the engine now holds a chunk position there.
            for head in range(h):
                pos = owner.seqs[row].slot_positions(self.layer_idx, head)
                new = np.nonzero(pos >= p0)[0]
                if new.size:
                    s = torch.from_numpy(new.astype(np.int64)).to(self.keys.device)
                    src = torch.from_numpy((pos[new] - p0).astype(np.int64)).to(self.keys.device)
                    self.keys[row, head, s] = key_states[row, head, src]
                    self.values[row, head, s] = value_states[row, head, src]
        self.seen += n
        self.used = min(self.used + n, owner.budget)
        return full_k, full_v

    def get_mask_sizes(self, cache_position) -> tuple[int, int]:
        # kv index j of what update returns sits at position j + offset for the
        # causal mask: kept slots are all older than the new tokens, which
        # follow them in order.
        n = cache_position.shape[0]
        if n == 1:
            length = min(self.seen + 1, self.owner.budget)
            return length, self.seen + 1 - length
        used = min(self.seen, self.owner.budget)
        return used + n, self.seen - used

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_cache_shape(self) -> int:
        return -1  # positions are unbounded; memory is bounded by the budget

    def reset(self) -> None:
        super().reset()
        self.seen = self.used = 0

    def reorder_cache(self, beam_idx) -> None:
        raise Unsupported("HashEvictCache does not support beam search (its slot mapping is per sequence)")

    def crop(self, max_length: int) -> None:
        raise Unsupported("HashEvictCache cannot be cropped: evicted positions are gone")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise Unsupported("HashEvictCache does not support expanding the batch after prefill")

    def batch_select_indices(self, indices) -> None:
        raise Unsupported("HashEvictCache does not support selecting batch rows")


class HashEvictCache(Cache):
    """A transformers ``Cache`` whose full-attention layers keep ``budget``
    slots per KV head, evicting with libhashevict (slot mode).

    ``model``: the causal LM (its config gives layers, heads, head_dim and
    which layers slide; its attention modules get the query capture).
    Keyword arguments ``policy``, ``probe``, ``score``, ``hash_bits``,
    ``n_sink``, ``n_recent``, ``seed``, ``decay`` go to :class:`Engine`
    (library defaults when None). ``prefill_chunk``: tokens per
    ``hashevict_place`` call while shrinking after a prefill forward.
    """

    def __init__(self, model, budget: int, *, policy=None, probe="query", score=None, hash_bits=None,
                 n_sink=None, n_recent=None, seed=None, decay=None, prefill_chunk: int = 16,
                 record: bool = False):
        cfg = model.config.get_text_config(decoder=True)
        n_layers = cfg.num_hidden_layers
        n_q = cfg.num_attention_heads
        n_kv = getattr(cfg, "num_key_value_heads", None) or n_q
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_q
        if isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int) or prefill_chunk < 1:
            raise InvalidArgument(f"prefill_chunk = {prefill_chunk!r}; want an int >= 1")
        probe_name = str(getattr(probe, "name", probe)).lower()
        if probe_name not in ("query", "key"):
            raise InvalidArgument(f"probe = {probe!r}; want 'query' or 'key'")
        self.engine = Engine(mode="slot", n_layers=n_layers, n_kv_heads=n_kv, n_q_heads=n_q, head_dim=head_dim,
                             budget=budget, policy=policy, probe=probe_name, score=score, hash_bits=hash_bits,
                             n_sink=n_sink, n_recent=n_recent, seed=seed, decay=decay)
        self.budget = self.engine.params.budget
        self.n_q_heads, self.n_kv_heads, self.head_dim = n_q, n_kv, head_dim
        self.probe = probe_name
        self.prefill_chunk = prefill_chunk
        self.seqs: list = []
        self._recorder = [] if record else None
        self.capture_modules = install_query_capture(model) if probe_name == "query" else []
        layer_types = getattr(cfg, "layer_types", None) or ["full_attention"] * n_layers
        window = getattr(cfg, "sliding_window", None)
        layers = []
        for i, kind in enumerate(layer_types[:n_layers]):
            if kind in ("sliding_attention", "chunked_attention") and window:
                layers.append(DynamicSlidingWindowLayer(sliding_window=window))
            else:
                layers.append(HashEvictLayer(self, i))
        super().__init__(layers=layers)

    # The engine's sequence r is batch row r.
    def _ensure_sequences(self, batch: int) -> None:
        while len(self.seqs) < batch:
            self.seqs.append(self.engine.sequence(len(self.seqs)))

    def _place(self, row, layer, q, k, seq, positions, lo=0, hi=None):
        hi = positions.size if hi is None else hi
        kk = k[row, :, lo:hi].transpose(0, 1)  # [n, kv_heads, head_dim], strided view
        qq = q[row, :, lo:hi].transpose(0, 1) if q is not None else None
        return self.seqs[seq].place(layer, qq, kk, positions[lo:hi])

    @property
    def records(self) -> list:
        """With ``record=True``: (layer, q, k, first position) of every
        update, as the engine saw them (CPU tensors [batch, heads, n, dim])."""
        if self._recorder is None:
            raise InvalidArgument("HashEvictCache(record=True) keeps the records")
        return self._recorder

    def reset(self):
        super().reset()
        for s in self.seqs:
            s.reset()

    def close(self) -> None:
        for s in self.seqs:
            s.close()
        self.seqs = []
        self.engine.close()
