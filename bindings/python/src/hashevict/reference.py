"""An independent, pure-numpy model of HashEvict as libhashevict specifies it.

Written from the paper (arXiv 2412.16187) and ``docs/algorithm.md``; it
shares no code with the library and needs neither the library nor ctypes.
Its purpose is to be *bit-exact*: the tests compare it with the library on
codes, distances, victims and evicted positions.

Exactness rules followed here:

* Projections come from the specified generator (splitmix64 + Box-Muller in
  float64, each value rounded to float32).
* A code bit is the sign test of a float32 dot product accumulated in 16
  lanes: element i goes into lane ``i % 16`` with a rounded float32 multiply
  followed by a rounded float32 add, then lanes fold ``lane[i] += lane[i+w]``
  for w = 8, 4, 2, 1. numpy's ``dot``/``sum`` reorder additions, so they are
  never used; :func:`lane_dots` walks the 16-element blocks in order and adds
  block after block, each lane being one element of a float32 vector (the
  per-lane operation sequence is exactly the specified one).
  :func:`lane_dot_scalar` is the same computation one scalar at a time.
* Scores are float32 with the operation order of the specification: the
  step distance is ``float32(d) * (1/float32(n))``; accumulated scores are a
  running mean ``s + (x - s) / float32(count)``; decayed ones
  ``float32(decay*s) + float32((1-decay)*x)``.
* Token-mode totals are float64 sums over layers (outer) then KV heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import (
    ChunkTooLarge,
    InvalidArgument,
    NonFinite,
    PositionError,
    SequenceExists,
    ShapeError,
    UnknownSequence,
    WrongMode,
)

LANES = 16
GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_U64 = np.uint64

# ---------------------------------------------------------------------------
# Projections
# ---------------------------------------------------------------------------


def splitmix64(state: int, count: int) -> np.ndarray:
    """The first ``count`` outputs of splitmix64 started at ``state``.

    The k-th call (k = 1, 2, ...) sees the state ``state + k*GOLDEN``
    (mod 2^64), so the whole stream is computed at once."""
    with np.errstate(over="ignore"):
        k = np.arange(1, count + 1, dtype=_U64)
        z = _U64(state % 2**64) + k * _U64(GOLDEN)
        z = (z ^ (z >> _U64(30))) * _U64(_MIX1)
        z = (z ^ (z >> _U64(27))) * _U64(_MIX2)
        return z ^ (z >> _U64(31))


def uniforms(state: int, count: int) -> np.ndarray:
    """u = ((next() >> 11) + 0.5) / 2^53, in (0, 1), float64."""
    top = (splitmix64(state, count) >> _U64(11)).astype(np.float64)  # < 2^53: exact
    return (top + 0.5) / float(2**53)


def projection(seed: int, layer: int, head_dim: int, bits: int) -> np.ndarray:
    """Layer ``layer``'s Rᵀ, float32 [bits, head_dim] (row j: bit j)."""
    n = bits * head_dim
    pairs = (n + 1) // 2
    start = (seed + GOLDEN * (layer + 1)) % 2**64
    u = uniforms(start, 2 * pairs)
    out = np.empty(2 * pairs, np.float64)
    # Scalar libm (math) for log/cos/sin: correctly rounded in practice, and
    # independent of numpy's SIMD approximations.
    for i in range(pairs):
        u1, u2 = float(u[2 * i]), float(u[2 * i + 1])
        r = math.sqrt(-2.0 * math.log(u1))
        a = 2.0 * math.pi * u2
        out[2 * i] = r * math.cos(a)
        out[2 * i + 1] = r * math.sin(a)
    return out[:n].astype(np.float32).reshape(bits, head_dim)


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Raw bfloat16 bit patterns (uint16) to float32, exactly."""
    b = np.asarray(bits, dtype=np.uint16)
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def as_float32(x) -> np.ndarray:
    """Widens an input exactly to float32: numpy float32/float16 arrays,
    ml_dtypes bfloat16 arrays, ``hashevict.bf16`` wrappers (uint16 bits),
    or torch tensors of those types."""
    if hasattr(x, "array") and getattr(x.array, "dtype", None) == np.uint16:  # hashevict.bf16
        return bf16_to_float32(x.array)
    if type(x).__module__.split(".")[0] == "torch":
        return x.detach().cpu().float().numpy()
    a = np.asarray(x)
    if a.dtype == np.float32:
        return a
    if a.dtype == np.float16 or a.dtype.name == "bfloat16":
        return a.astype(np.float32)  # both are exact widenings
    raise TypeError(f"reference: unsupported dtype {a.dtype}")


# ---------------------------------------------------------------------------
# Codes and distances
# ---------------------------------------------------------------------------


def lane_dots(x: np.ndarray, rt: np.ndarray) -> np.ndarray:
    """float32 [N, bits]: the dot product of every row of ``x`` [N, dim] with
    every row of ``rt`` [bits, dim] in the specified 16-lane order."""
    x = np.asarray(x, np.float32)
    rt = np.asarray(rt, np.float32)
    n, dim = x.shape
    bits = rt.shape[0]
    acc = np.zeros((n, bits, LANES), np.float32)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        # Block b holds elements 16b .. 16b+15; element 16b+l goes to lane l.
        for start in range(0, dim, LANES):
            w = min(LANES, dim - start)
            prod = x[:, None, start : start + w] * rt[None, :, start : start + w]  # rounded multiply
            acc[:, :, :w] = acc[:, :, :w] + prod  # rounded add, lane by lane
        for width in (8, 4, 2, 1):  # fold: lane[i] += lane[i + width]
            acc[:, :, :width] = acc[:, :, :width] + acc[:, :, width : 2 * width]
    return acc[:, :, 0]


def lane_dot_scalar(x, r) -> np.float32:
    """One dot product, one float32 scalar operation at a time (the
    specification written out; slow, used to check :func:`lane_dots`)."""
    acc = [np.float32(0)] * LANES
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for i in range(len(x)):
            lane = i % LANES
            p = np.float32(x[i]) * np.float32(r[i])
            acc[lane] = np.float32(acc[lane] + p)
        for width in (8, 4, 2, 1):
            for lane in range(width):
                acc[lane] = np.float32(acc[lane] + acc[lane + width])
    return acc[0]


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """bool [..., b] -> uint64 [..., ceil(b/64)]: bit j is bit j%64 of word j//64."""
    bits = np.asarray(bits, bool)
    b = bits.shape[-1]
    words = (b + 63) // 64
    out = np.zeros(bits.shape[:-1] + (words,), _U64)
    for w in range(words):
        chunk = bits[..., 64 * w : 64 * (w + 1)].astype(_U64)
        shifts = np.arange(chunk.shape[-1], dtype=_U64)
        out[..., w] = np.bitwise_or.reduce(chunk << shifts, axis=-1)
    return out


def codes(x, rt: np.ndarray) -> np.ndarray:
    """Codes of the rows of ``x`` [..., dim] -> uint64 [..., words]."""
    xf = as_float32(x)
    lead = xf.shape[:-1]
    flat = xf.reshape(-1, xf.shape[-1])
    # -0.0 >= 0 holds; NaN (from inf - inf) gives 0.
    signs = lane_dots(flat, rt) >= 0
    return pack_bits(signs).reshape(lead + (-(-rt.shape[0] // 64),))


if hasattr(np, "bitwise_count"):

    def popcount(a: np.ndarray) -> np.ndarray:
        return np.bitwise_count(a).astype(np.int64)

else:  # numpy < 2
    _POP8 = np.array([bin(i).count("1") for i in range(256)], np.int64)

    def popcount(a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a, _U64)
        return _POP8[a.view(np.uint8)].reshape(a.shape + (8,)).sum(-1)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between codes (broadcasting over leading axes)."""
    return popcount(np.bitwise_xor(a, b)).sum(-1)


def distance_sums(cached: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """cached [..., m, W], probes [..., p, W] -> int64 [..., m]: the sum over
    probes of the Hamming distance of each cached code."""
    return hamming(cached[..., :, None, :], probes[..., None, :, :]).sum(-1)


def step_distance(sums: np.ndarray, n: int) -> np.ndarray:
    """float32(sum) * (1/float32(n)): the step distance of the specification."""
    inv = np.float32(1) / np.float32(n)
    return np.asarray(sums).astype(np.float32) * inv


def update_scores(score, count, sums, n, mode, decay):
    """Returns (score, count) after folding a step in (float32 throughout).

    mode 0 instant: the step distance; 1 accumulated: running mean over the
    steps since the entry was cached; 2 decayed: s = decay*s + (1-decay)*d."""
    d = step_distance(sums, n)
    s = np.asarray(score, np.float32)
    if mode == 0:
        return d, count
    if mode == 1:
        c = count + 1
        return s + (d - s) / c.astype(np.float32), c
    if mode == 2:
        dec = np.float32(decay)
        keep = np.float32(1) - dec
        return dec * s + keep * d, count
    raise ValueError(f"score mode {mode}")


def knorm(x: np.ndarray) -> np.ndarray:
    """float32(sqrt(sum of squares in float64, element order))."""
    xf = as_float32(x).astype(np.float64)
    ss = np.zeros(xf.shape[:-1], np.float64)
    for i in range(xf.shape[-1]):
        ss = ss + xf[..., i] * xf[..., i]
    return np.sqrt(ss).astype(np.float32)


# ---------------------------------------------------------------------------
# Compress after prefill
# ---------------------------------------------------------------------------
COMPRESS_TAU = 8.0  # the softmax temperature of HASHEVICT_COMPRESS_SOFTMAX


COMPRESS_LOCAL_RADIUS = 64  # the neighbourhood of HASHEVICT_COMPRESS_LOCAL, either side


def compress_scores(key_codes: np.ndarray, probe_codes: np.ndarray, bits: int, pool: int, form: str = "cosine") -> np.ndarray:
    """The eviction scores of hashevict_compress for one KV head.

    key_codes [m, W]: the candidates' codes in position order; probe_codes
    [p, W]: the window's probes. Per candidate, the mean over the probes of
    cos(pi*d/b) ("cosine"), -d ("distance") or the probe's softmax over the
    candidates of tau*cos(pi*d/b) ("softmax", tau = COMPRESS_TAU); with
    "+local", minus the mean of those over the candidates within
    COMPRESS_LOCAL_RADIUS either side (itself included); max-pooled over
    the candidates i - pool//2 .. i + pool//2 (i - (pool-1) .. i + pool//2
    with "+trailing"), then mapped to the distance scale (b*acos(e)/pi with
    e clamped to [-1, 1], or -e) as float32: larger is dropped first."""
    form, *flags = form.split("+")
    if set(flags) - {"local", "trailing"}:
        raise ValueError(f"flags {flags!r}")
    d = hamming(key_codes[:, None, :], probe_codes[None, :, :]).astype(np.float64)  # [m, p]
    if form == "cosine":
        est = np.cos(np.pi * d / bits).sum(1) / d.shape[1]
    elif form == "distance":
        est = -d.sum(1) / d.shape[1]
    elif form == "softmax":
        w = np.exp(COMPRESS_TAU * (np.cos(np.pi * d / bits) - 1))
        est = (w / w.sum(0, keepdims=True)).sum(1) / d.shape[1]
    else:
        raise ValueError(f"form {form!r}")
    m = est.size
    if "local" in flags:
        # Sequential float64 sums, in the engine's order (the estimates
        # before them are numpy sums, so agreement is to rounding, as for
        # the forms without flags).
        r = COMPRESS_LOCAL_RADIUS
        local = np.empty(m)
        for i in range(m):
            lo, hi = max(0, i - r), min(m - 1, i + r)
            s = 0.0
            for j in range(lo, hi + 1):
                s += float(est[j])
            local[i] = est[i] - s / (hi - lo + 1)
        est = local
    back = fwd = pool // 2
    if "trailing" in flags and pool > 1:
        back = pool - 1
    if back > 0 or fwd > 0:
        est = np.array([est[max(0, i - back) : min(m, i + fwd + 1)].max() for i in range(m)])
    if form == "cosine":
        return (bits * np.arccos(np.clip(est, -1, 1)) / np.pi).astype(np.float32)
    return (-est).astype(np.float32)


def compress_keep(positions, scores, budget: int, n_sink: int, n_recent: int, n_window: int) -> np.ndarray:
    """bool mask over candidates (positions ascending): the ones
    hashevict_compress keeps. Protected: positions < n_sink, >= newest -
    n_recent, and the last n_window; then the smallest scores, ties to the
    newest position."""
    pos = np.asarray(positions, np.int64)
    m = pos.size
    keep = (pos < n_sink) | (pos >= pos[-1] - n_recent)
    keep[m - n_window :] = True
    free = budget - int(keep.sum())
    if free < 0:
        raise ChunkTooLarge("reference: the protected positions exceed the budget")
    cand = np.flatnonzero(~keep)
    # lexsort: last key primary; ascending score, then descending position
    order = cand[np.lexsort((-pos[cand], np.asarray(scores)[cand]))]
    keep[order[:free]] = True
    return keep


# ---------------------------------------------------------------------------
# The engine model
# ---------------------------------------------------------------------------
_MODES = {"slot": 0, "token": 1}
_POLICIES = {"hash": 0, "sink_recent": 1, "knorm": 2}
_PROBES = {"query": 0, "key": 1}
_SCORES = {"instant": 0, "accumulated": 1, "decayed": 2}


def _pick(table, value, what):
    if isinstance(value, str):
        key = value.lower().replace("-", "_")
        if key not in table:
            raise ValueError(f"reference: {what} {value!r} is not modelled (have {sorted(table)})")
        return table[key]
    v = int(value)
    if v not in table.values():
        raise ValueError(f"reference: {what} {v} is not modelled")
    return v


@dataclass
class _SlotLayer:
    pos: np.ndarray  # [n_kv, budget] int64, -1 free
    codes: np.ndarray  # [n_kv, budget, W] uint64
    score: np.ndarray  # [n_kv, budget] float32
    count: np.ndarray  # [n_kv, budget] uint32
    used: int = 0
    last: int = -1


@dataclass
class _TokenLayer:
    pos: np.ndarray  # [m] int64, positions this layer observed (still live)
    codes: np.ndarray  # [n_kv, m, W]
    score: np.ndarray  # [n_kv, m] float32
    count: np.ndarray  # [n_kv, m] uint32
    last: int = -1


@dataclass
class _Seq:
    layers: list
    seen: dict = field(default_factory=dict)  # token mode: position -> layers observed
    max_pos: int = -1


@dataclass
class Decision:
    """What one step did for one KV head (for step-by-step comparisons)."""

    sums: np.ndarray  # distance sums of the cached entries before the step
    scores: np.ndarray  # their scores after the update
    evictable: np.ndarray  # bool mask over the cached entries
    victims: np.ndarray  # slots chosen, in token order


class Reference:
    """The algorithm on numpy arrays; mirrors the library's engine.

    Models the policies "hash" (every probe and score mode), "sink_recent"
    and "knorm", in slot and token mode. ``projections`` may be given
    (e.g. the library's, to isolate a difference); by default they are
    derived from ``seed`` with :func:`projection`."""

    def __init__(
        self,
        *,
        n_layers,
        n_kv_heads,
        head_dim,
        budget,
        n_q_heads=None,
        mode="slot",
        policy="hash",
        probe="query",
        score="instant",
        hash_bits=16,
        n_sink=4,
        n_recent=10,
        seed=0,
        decay=0.9,
        projections=None,
        **_ignored,
    ):
        self.n_layers = n_layers
        self.n_kv = n_kv_heads
        self.n_q = n_kv_heads if n_q_heads is None else n_q_heads
        self.group = self.n_q // self.n_kv
        self.dim = head_dim
        self.budget = budget
        self.mode = _pick(_MODES, mode, "mode")
        self.policy = _pick(_POLICIES, policy, "policy")
        self.probe = _pick(_PROBES, probe, "probe")
        self.score_mode = _pick(_SCORES, score, "score")
        self.bits = hash_bits
        self.words = (hash_bits + 63) // 64
        self.n_sink = n_sink
        self.n_recent = n_recent
        self.decay = np.float32(decay)
        if projections is None:
            projections = [projection(seed, l, head_dim, hash_bits) for l in range(n_layers)]
        self.proj = [np.asarray(p, np.float32) for p in projections]
        self.seqs: dict[int, _Seq] = {}
        #: Token mode: per-layer attention windows (0: every position).
        self.windows = [0] * n_layers
        #: Per-KV-head decisions of the last place() call.
        self.last_decisions: list[Decision] = []

    # -- sequences ---------------------------------------------------------
    def _new_seq(self) -> _Seq:
        if self.mode == 0:
            W, B, H = self.words, self.budget, self.n_kv
            layers = [
                _SlotLayer(
                    pos=np.full((H, B), -1, np.int64),
                    codes=np.zeros((H, B, W), _U64),
                    score=np.zeros((H, B), np.float32),
                    count=np.zeros((H, B), np.uint32),
                )
                for _ in range(self.n_layers)
            ]
        else:
            layers = [
                _TokenLayer(
                    pos=np.zeros(0, np.int64),
                    codes=np.zeros((self.n_kv, 0, self.words), _U64),
                    score=np.zeros((self.n_kv, 0), np.float32),
                    count=np.zeros((self.n_kv, 0), np.uint32),
                )
                for _ in range(self.n_layers)
            ]
        return _Seq(layers=layers)

    def add(self, seq: int) -> None:
        if seq in self.seqs:
            raise SequenceExists(f"reference: sequence {seq} already exists")
        self.seqs[seq] = self._new_seq()

    def remove(self, seq: int) -> None:
        self._seq(seq)
        del self.seqs[seq]

    def reset(self, seq: int) -> None:
        self._seq(seq)
        self.seqs[seq] = self._new_seq()

    def fork(self, src: int, dst: int) -> None:
        import copy

        s = self._seq(src)
        if dst in self.seqs:
            raise SequenceExists(f"reference: sequence {dst} already exists")
        self.seqs[dst] = copy.deepcopy(s)

    def _seq(self, seq: int) -> _Seq:
        if seq not in self.seqs:
            raise UnknownSequence(f"reference: sequence {seq} does not exist")
        return self.seqs[seq]

    # -- pieces ------------------------------------------------------------
    def hash(self, layer: int, x) -> np.ndarray:
        return codes(x, self.proj[layer])

    def window(self, newest: int):
        """Evictable positions are lo <= p < hi."""
        lo = self.n_sink
        return lo, max(newest - self.n_recent, lo)

    def _read(self, layer, q, k, n):
        """Widened, checked inputs and everything the policy derives from
        them: key codes [n, n_kv, W], probes [n_kv, n_probes, W], key norms."""
        kf = as_float32(k)
        if kf.shape != (n, self.n_kv, self.dim):
            raise ShapeError(f"reference: k has shape {kf.shape}, want {(n, self.n_kv, self.dim)}")
        if not np.isfinite(kf).all():
            raise NonFinite("reference: k holds NaN or Inf")
        qf = None
        if q is not None:
            qf = as_float32(q)
            if qf.shape != (n, self.n_q, self.dim):
                raise ShapeError(f"reference: q has shape {qf.shape}, want {(n, self.n_q, self.dim)}")
            # as the library: only a q the policy reads is checked for NaN/Inf
            reads_q = self.policy == 4 or (self.policy == 0 and self.probe == 0)
            if reads_q and not np.isfinite(qf).all():
                raise NonFinite("reference: q holds NaN or Inf")
        out = {}
        if self.policy == 0:
            kc = codes(kf, self.proj[layer])  # [n, n_kv, W]
            out["kcodes"] = kc
            if self.probe == 0:
                if qf is None:
                    raise InvalidArgument("reference: the query probe needs q")
                qc = codes(qf, self.proj[layer])  # [n, n_q, W]
                g = self.group
                # probes of KV head h: token-major, then the group's query heads
                pr = qc.reshape(n, self.n_kv, g, self.words).transpose(1, 0, 2, 3)
                out["probes"] = pr.reshape(self.n_kv, n * g, self.words)
            else:
                out["probes"] = kc.transpose(1, 0, 2)
        else:
            out["kcodes"] = np.zeros((n, self.n_kv, self.words), _U64)
        if self.policy == 2:
            out["knorm"] = knorm(kf)  # [n, n_kv]
        return out

    def _check_positions(self, positions, last):
        pos = [int(p) for p in np.atleast_1d(np.asarray(positions))]
        if not pos:
            raise InvalidArgument("reference: n_tokens = 0")
        prev = last
        for p in pos:
            if p < 0 or p <= prev:
                raise PositionError(f"reference: position {p} is negative or not after {prev}")
            prev = p
        return np.array(pos, np.int64)

    # -- slot mode ---------------------------------------------------------
    def place(self, seq: int, layer: int, q, k, positions):
        """One slot-mode step; returns (slots, evicted), [n, n_kv] int32."""
        if self.mode != 0:
            raise WrongMode("reference: place needs a slot-mode engine")
        s = self._seq(seq)
        L = s.layers[layer]
        pos = self._check_positions(positions, L.last)
        n = len(pos)
        inp = self._read(layer, q, k, n)
        H, B, used = self.n_kv, self.budget, L.used
        lo, hi = self.window(int(pos[-1]))
        cached_pos = L.pos[:, :used]
        evictable = (cached_pos >= lo) & (cached_pos < hi)
        free = B - used
        need = n - free
        if need > 0:
            short = evictable.sum(axis=1) < need
            if short.any():
                h = int(np.argmax(short))
                raise ChunkTooLarge(f"reference: chunk of {n} does not fit kv head {h} of layer {layer}")

        # Scores: update the cached entries, compute the new tokens' initial ones.
        if self.policy == 0:
            probes = inp["probes"]
            sums = distance_sums(L.codes[:, :used], probes)  # [H, used]
            new_sums = distance_sums(inp["kcodes"].transpose(1, 0, 2), probes)  # [H, n]
            sc, cnt = update_scores(L.score[:, :used], L.count[:, :used], sums, n, self.score_mode, self.decay)
            L.score[:, :used] = sc
            L.count[:, :used] = cnt
            init = step_distance(new_sums, n)
        elif self.policy == 2:
            sums = np.zeros((H, used), np.int64)
            init = inp["knorm"].T  # [H, n]
        else:
            sums = np.zeros((H, used), np.int64)
            init = np.zeros((H, n), np.float32)

        slots = np.empty((n, H), np.int32)
        evicted = np.empty((n, H), np.int32)
        self.last_decisions = []
        for h in range(H):
            if need > 0:
                cand = np.flatnonzero(evictable[h])
                if self.policy == 1:  # oldest position first
                    order = np.argsort(cached_pos[h, cand], kind="stable")
                else:  # largest score first, ties to the lowest slot
                    order = np.argsort(-L.score[h, cand], kind="stable")
                victims = cand[order[:need]]
            else:
                victims = np.zeros(0, np.int64)
            self.last_decisions.append(
                Decision(
                    sums=sums[h].copy(),
                    scores=L.score[h, :used].copy(),
                    evictable=evictable[h].copy(),
                    victims=victims.copy(),
                )
            )
            for t in range(n):
                if t < free:
                    slot = used + t
                    old = -1
                else:
                    slot = int(victims[t - free])
                    old = int(L.pos[h, slot])
                L.pos[h, slot] = pos[t]
                L.codes[h, slot] = inp["kcodes"][t, h]
                L.score[h, slot] = init[h, t]
                L.count[h, slot] = 1
                slots[t, h] = slot
                evicted[t, h] = old
        L.used = used + min(n, free)
        L.last = int(pos[-1])
        return slots, evicted

    def slot_positions(self, seq: int, layer: int, kv_head: int) -> np.ndarray:
        return self._seq(seq).layers[layer].pos[kv_head].astype(np.int32)

    # -- token mode --------------------------------------------------------
    def observe(self, seq: int, layer: int, q, k, positions) -> None:
        if self.mode != 1:
            raise WrongMode("reference: observe needs a token-mode engine")
        s = self._seq(seq)
        L = s.layers[layer]
        pos = self._check_positions(positions, L.last)
        n = len(pos)
        inp = self._read(layer, q, k, n)
        if self.policy == 0:
            probes = inp["probes"]
            sums = distance_sums(L.codes, probes)
            L.score, L.count = update_scores(L.score, L.count, sums, n, self.score_mode, self.decay)
            init = step_distance(distance_sums(inp["kcodes"].transpose(1, 0, 2), probes), n)
        elif self.policy == 2:
            init = inp["knorm"].T
        else:
            init = np.zeros((self.n_kv, n), np.float32)
        L.pos = np.concatenate([L.pos, pos])
        L.codes = np.concatenate([L.codes, inp["kcodes"].transpose(1, 0, 2)], axis=1)
        L.score = np.concatenate([np.asarray(L.score, np.float32), init.astype(np.float32)], axis=1)
        L.count = np.concatenate([L.count, np.ones((self.n_kv, n), np.uint32)], axis=1)
        L.last = int(pos[-1])
        for p in pos:
            s.seen[int(p)] = s.seen.get(int(p), 0) + 1
        s.max_pos = max(s.max_pos, L.last)

    def set_layer_window(self, layer: int, window: int) -> None:
        """Layer ``layer`` attends only to p > t - window (0: every position)."""
        if self.mode != 1:
            raise WrongMode("reference: layer windows need a token-mode engine")
        self.windows[layer] = int(window)

    def totals(self, seq: int, positions) -> np.ndarray:
        """float64 sum over layers (outer) then KV heads of each position's
        score (positions every layer observed). With layer windows, only the
        layers that see a position from the newest one (p > t - window) add,
        and the sum becomes their mean (+inf when none sees it)."""
        s = self._seq(seq)
        positions = np.asarray(positions, np.int64)
        total = np.zeros(len(positions), np.float64)
        pairs = np.zeros(len(positions), np.int64)
        for L, w in zip(s.layers, self.windows):
            idx = np.searchsorted(L.pos, positions)  # L.pos is increasing
            sees = np.ones(len(positions), bool) if w == 0 else positions > s.max_pos - w
            pairs += sees * self.n_kv
            for h in range(self.n_kv):
                total = total + np.where(sees, L.score[h, idx].astype(np.float64), 0.0)
        if any(w > 0 for w in self.windows):
            with np.errstate(divide="ignore", invalid="ignore"):
                total = np.where(pairs > 0, total / np.maximum(pairs, 1), np.inf)
        return total

    def evictions(self, seq: int, capacity: int | None = None) -> np.ndarray:
        if self.mode != 1:
            raise WrongMode("reference: evictions needs a token-mode engine")
        s = self._seq(seq)
        live = len(s.seen)
        excess = live - self.budget
        if excess <= 0:
            return np.zeros(0, np.int32)
        lo, hi = self.window(s.max_pos)
        cand = np.array(
            sorted(p for p, c in s.seen.items() if lo <= p < hi and c == self.n_layers), np.int64
        )
        if self.policy == 1:
            order = np.arange(len(cand))
        else:
            total = self.totals(seq, cand)
            order = np.argsort(-total, kind="stable")  # cand ascending: ties to the lowest position
        k = min(excess, len(cand), excess if capacity is None else capacity)
        chosen = np.sort(cand[order[:k]])
        drop = set(int(p) for p in chosen)
        for p in drop:
            del s.seen[p]
        for L in s.layers:
            keep = ~np.isin(L.pos, chosen)
            L.pos = L.pos[keep]
            L.codes = L.codes[:, keep]
            L.score = L.score[:, keep]
            L.count = L.count[:, keep]
        return chosen.astype(np.int32)

    def token_positions(self, seq: int) -> np.ndarray:
        return np.array(sorted(self._seq(seq).seen), np.int32)
