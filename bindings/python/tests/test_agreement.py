"""The library and hashevict.reference agree on 100 % of victims over more
than 100,000 random steps.

A "step" here is one eviction decision: one hashevict_place call for one
(layer, KV head) in which at least one cached token had to be evicted. Every
such decision is compared (the slot chosen for each new token and the
position it held), and so is every non-evicting placement. Configurations
cover code widths 8..256, dtypes f32/f16/bf16 (bf16 as raw bits through
hashevict.bf16; torch tensors in test_torch.py), GQA groups 1/2/4, the three
score modes and both probes, with prefill chunks and multi-token chunks
between decode steps.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import hashevict
from hashevict import reference as ref

BITS = [8, 16, 32, 64, 128, 256]
DTYPES = ["f32", "f16", "bf16"]
GROUPS = [1, 2, 4]
SCORES = ["instant", "accumulated", "decayed"]
MIN_DECISIONS = 100_000


try:  # bf16 goes through torch tensors when torch is installed
    import torch as _torch
except Exception:  # ImportError or a broken install: raw bits via hashevict.bf16
    _torch = None


def make_input(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(np.float32)
    r = rng.random()
    if r < 0.05:
        x *= np.float32(1e-30 if dtype == "f32" else 1e-6)  # tiny (f16: subnormal range)
    elif r < 0.08:
        x = np.zeros(shape, np.float32)
    elif r < 0.12:
        x = np.round(x)  # few distinct values: many equal codes, many ties
    if dtype == "f32":
        return x, x
    if dtype == "f16":
        h = x.astype(np.float16)
        return h, h
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncate to bf16
    if _torch is not None:
        t = _torch.from_numpy(bits.view(np.int16)).view(_torch.bfloat16)
        return t, t
    return hashevict.bf16(bits), hashevict.bf16(bits)


def run_config(cfg_rng, bits, dtype, group, score, per_head_layer=85):
    n_layers, n_kv = 2, 2
    dim = int(cfg_rng.choice([8, 16, 24, 40, 64]))
    budget = int(cfg_rng.integers(14, 26))
    n_sink = int(cfg_rng.integers(0, 3))
    n_recent = int(cfg_rng.integers(0, 5))
    probe = "key" if cfg_rng.random() < 0.25 else "query"
    seed = int(cfg_rng.integers(0, 2**63))
    kw = dict(n_layers=n_layers, n_kv_heads=n_kv, n_q_heads=n_kv * group, head_dim=dim, budget=budget,
              hash_bits=bits, n_sink=n_sink, n_recent=n_recent, score=score, probe=probe, seed=seed,
              decay=float(cfg_rng.choice([0.5, 0.9, 0.99])))
    decisions = placements = 0
    with hashevict.Engine(**kw) as eng, eng.sequence(0) as seq:
        model = ref.Reference(**kw)
        model.add(0)
        rng = np.random.default_rng(seed)
        t = 0
        prefill = int(rng.integers(1, budget))
        steps = 0
        while decisions < n_layers * n_kv * per_head_layer or steps < 20:
            n = prefill if steps == 0 else (int(rng.integers(2, 5)) if rng.random() < 0.1 else 1)
            pos = np.arange(t, t + n)
            t += n
            for layer in range(n_layers):
                q, qr = make_input(rng, (n, n_kv * group, dim), dtype)
                k, kr = make_input(rng, (n, n_kv, dim), dtype)
                try:
                    got = seq.place(layer, q, k, pos)
                except hashevict.ChunkTooLarge:
                    try:
                        model.place(0, layer, qr, kr, pos)
                    except hashevict.ChunkTooLarge:
                        continue
                    raise AssertionError("the library refused a chunk the reference placed")
                want = model.place(0, layer, qr, kr, pos)
                assert np.array_equal(got.slots, want[0]) and np.array_equal(got.evicted, want[1]), (
                    f"disagreement at position {pos[-1]}, layer {layer}, config {kw}, dtype {dtype}:\n"
                    f"library slots {got.slots.T} evicted {got.evicted.T}\n"
                    f"reference slots {want[0].T} evicted {want[1].T}"
                )
                for h in range(n_kv):
                    if (got.evicted[:, h] >= 0).any():
                        decisions += 1
                    placements += 1
            steps += 1
        for layer in range(n_layers):
            for h in range(n_kv):
                assert np.array_equal(seq.slot_positions(layer, h), model.slot_positions(0, layer, h))
    return decisions, placements


def agreement(cfg_rng, per_head_layer=170, configs=None):
    """Runs every (bits, dtype, group, score) configuration (or the first
    ``configs``) until each (layer, KV head) made ``per_head_layer`` eviction
    decisions; returns (eviction decisions, placements, configurations)."""
    decisions = placements = n = 0
    for bits, dtype, group, score in itertools.islice(itertools.product(BITS, DTYPES, GROUPS, SCORES), configs):
        d, p = run_config(cfg_rng, bits, dtype, group, score, per_head_layer)
        decisions += d
        placements += p
        n += 1
    return decisions, placements, n


def test_victims_agree_on_100k_random_steps(capsys):
    start = time.perf_counter()
    decisions, placements, configs = agreement(np.random.default_rng(20241216))
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\n[hashevict agreement] {decisions} eviction decisions ((place call, KV head) pairs that evicted) "
            f"of {placements} placements over {configs} configurations: 100% agreement "
            f"(kernels {hashevict.kernels()}, bf16 via {'torch' if _torch is not None else 'hashevict.bf16'}, "
            f"{elapsed:.1f} s)"
        )
    assert decisions >= MIN_DECISIONS


KERNEL_SETS = ["generic", "avx2", "avx512"]


@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_every_kernel_set_agrees(kernels):
    """The library picks its kernels once, from HASHEVICT_KERNELS at load:
    each set this CPU has runs a shorter agreement in its own process."""
    code = textwrap.dedent(
        f"""
        import sys, numpy as np, hashevict
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        if hashevict.kernels() != {kernels!r}:
            print("unavailable", hashevict.kernels()); sys.exit(0)
        import test_agreement as ta
        d, p, n = ta.agreement(np.random.default_rng(7), per_head_layer=12, configs=None)
        print("ok", d, p, n)
        """
    )
    env = dict(os.environ, HASHEVICT_KERNELS=kernels)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    words = out.stdout.split()
    if words[0] == "unavailable":
        pytest.skip(f"{kernels} kernels not available here (library uses {words[1]})")
    assert words[0] == "ok" and int(words[1]) > 0
