#!/usr/bin/env python3
"""hashevict's Farthest against FAISS on identical codes, in one process.

Farthest (the decode step of the instant score) returns the first code of a
table at the largest summed Hamming distance to a set of probes. FAISS has
no "farthest", so each of its single-thread routes that gives the same
answer is timed, and the fastest one in each cell is the peer:

  hammings+argmax   faiss.hammings (probes x codes distances), then numpy
                    argmax (the distances summed over the probes first)
  knn_hc(~q)        faiss.hammings_knn_hc with k = 1 on the complemented
                    probe: argmin of the distance to ~q is argmax of the
                    distance to q (one probe only)
  knn_mc(~q)        faiss.hammings_knn_mc, the counting variant, the same way

hashevict's kernel is called through a benchmark-only library
(bench/peer, go build -buildmode=c-shared), never through libhashevict.
Every call, of either side, is one call from Python, so both pay a binding:
FAISS's SWIG pointers are made once and its calls take them; hashevict's call
is prepared once (hevpeer_prepare) and each timed call is hevpeer_run(), no
arguments (a call into Go through ctypes: the line "binding" below is the
cost of an empty one, hevpeer_nop). A third call in the same rounds,
hevpeer_read, reads the same table with the machine's fastest read loop
(the benchmark's AVX-512 loop): no kernel that looks at every code can be
faster, so "read / hashevict" says how far from that floor hashevict is
(near 1: bound by memory, where FAISS cannot be much slower either).
Each timing is a batch of calls of at least --batch-ms of this thread's CPU
time (time.thread_time_ns), and the sides are timed in paired, interleaved
rounds (the order rotates every round), so that each round gives a ratio
measured while the machine was in one state. The table reports the median
of those ratios and their range. FAISS runs with OpenMP threads = 1.

  make bench-faiss           # or: python3 bench/faiss_peer.py --lib build/bench/libhevpeer.so
"""

import argparse
import ctypes
import os
import platform
import statistics
import sys
import time

import numpy as np
import faiss


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default="build/bench/libhevpeer.so", help="the bench/peer library")
    ap.add_argument("--bits", default="16,64,128,256")
    ap.add_argument("--probes", default="1,4")
    ap.add_argument("--entries", default="4096,32768,1048576")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batch-ms", type=float, default=15.0, help="thread CPU time per timed batch")
    ap.add_argument("--kernels", default="", help="hashevict kernel set (default: the best this CPU runs)")
    ap.add_argument("--target", type=float, default=1.2, help="the ratio a cell must reach")
    return ap.parse_args()


def ints(s):
    return [int(x) for x in s.split(",") if x]


class Hashevict:
    def __init__(self, path, kernels):
        self.lib = ctypes.CDLL(os.path.abspath(path))
        self.lib.hevpeer_farthest.restype = ctypes.c_int64
        self.lib.hevpeer_farthest.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
        self.lib.hevpeer_prepare.restype = ctypes.c_int64
        self.lib.hevpeer_prepare.argtypes = self.lib.hevpeer_farthest.argtypes
        self.lib.hevpeer_run.restype = ctypes.c_int64
        self.lib.hevpeer_run.argtypes = []
        self.lib.hevpeer_nop.restype = ctypes.c_int64
        self.lib.hevpeer_nop.argtypes = []
        self.lib.hevpeer_read.restype = ctypes.c_int64
        self.lib.hevpeer_read.argtypes = []
        self.lib.hevpeer_use.argtypes = [ctypes.c_char_p]
        if kernels and self.lib.hevpeer_use(kernels.encode()) != 0:
            sys.exit(f"kernel set {kernels!r} not available")

    def route(self, codes, bits, n, probes_wide, np_):
        """The call to time: Farthest on these buffers, prepared once (the
        buffers stay alive in the caller), then run without arguments."""
        if self.lib.hevpeer_prepare(codes.ctypes.data, bits, n, probes_wide.ctypes.data, np_) != 0:
            sys.exit("hevpeer_prepare refused the table")
        return self.lib.hevpeer_run


def faiss_routes(codes, queries, n, cb, np_):
    """The FAISS routes that compute Farthest, as name -> call (returns the index)."""
    sp = faiss.swig_ptr
    routes = {}
    dis = np.empty((np_, n), dtype=np.int32)
    a, b, d = sp(queries), sp(codes), sp(dis)
    hammings = faiss.hammings
    if np_ == 1:
        row = dis[0]
        routes["hammings+argmax"] = lambda: (hammings(a, b, 1, n, cb, d), int(row.argmax()))[1]
    else:
        routes["hammings+argmax"] = lambda: (hammings(a, b, np_, n, cb, d), int(dis.sum(axis=0).argmax()))[1]
    if np_ == 1:
        nq = np.ascontiguousarray(~queries)
        D = np.empty(1, dtype=np.int32)
        I = np.empty(1, dtype=np.int64)
        ha = faiss.int_maxheap_array_t()
        ha.nh, ha.k, ha.val, ha.ids = 1, 1, sp(D), sp(I)
        q = sp(nq)
        knn_hc = faiss.hammings_knn_hc
        routes["knn_hc(~q)"] = lambda: (knn_hc(ha, q, b, n, cb, 0), int(I[0]))[1]
        knn_mc = faiss.hammings_knn_mc
        D2 = np.empty(1, dtype=np.int32)
        I2 = np.empty(1, dtype=np.int64)
        d2, i2 = sp(D2), sp(I2)
        routes["knn_mc(~q)"] = lambda: (knn_mc(q, b, 1, n, 1, cb, d2, i2), int(I2[0]))[1]
    return routes


def batch_reps(f, batch_ns):
    reps = 1
    while True:
        t = time.thread_time_ns()
        for _ in range(reps):
            f()
        if time.thread_time_ns() - t >= batch_ns or reps >= 1 << 20:
            return reps
        reps *= 2


def timed(f, reps):
    t = time.thread_time_ns()
    for _ in range(reps):
        f()
    return (time.thread_time_ns() - t) / reps


def cell(hev, bits, np_, n, args, rng):
    cb = bits // 8
    # The table: n codes of cb bytes, as FAISS lays them out; for
    # hashevict the same bytes are the table (narrow codes are arrays of
    # uint16/uint32, wide ones bits/64 little-endian words a code).
    codes = rng.integers(0, 256, size=n * cb + 8, dtype=np.uint8)[: n * cb]
    codes = np.ascontiguousarray(codes)
    queries = np.ascontiguousarray(rng.integers(0, 256, size=np_ * cb, dtype=np.uint8))
    # hashevict's probes are wide: a narrow probe's code in the low bits
    # of one word.
    if bits < 64:
        wide = np.zeros(np_, dtype=np.uint64)
        for i in range(np_):
            wide[i] = int.from_bytes(queries[i * cb:(i + 1) * cb].tobytes(), "little")
    else:
        wide = np.ascontiguousarray(queries.view(np.uint64))
    ours = hev.route(codes, bits, n, wide, np_)
    want = ours()
    routes = {}
    for name, f in faiss_routes(codes, queries, n, cb, np_).items():
        got = f()
        if got != want:
            print(f"  note: {name} gives {got}, hashevict {want} (bits {bits}, probes {np_}, n {n}): left out", file=sys.stderr)
            continue
        routes[name] = f
    if not routes:
        return None
    calls = {"hashevict": ours, "read": hev.lib.hevpeer_read, **routes}
    batch_ns = int(args.batch_ms * 1e6)
    reps = {k: batch_reps(f, batch_ns) for k, f in calls.items()}
    names = list(calls)
    per = {k: [] for k in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        if r % 2:
            order.reverse()
        for k in order:
            per[k].append(timed(calls[k], reps[k]))
    med = {k: statistics.median(v) for k, v in per.items()}
    peer = min(routes, key=lambda k: med[k])
    ratios = [f / h for f, h in zip(per[peer], per["hashevict"])]
    floor = [r / h for r, h in zip(per["read"], per["hashevict"])]
    return {
        "peer": peer, "ours_ns": med["hashevict"], "peer_ns": med[peer],
        "read_ns": med["read"], "floor": statistics.median(floor),
        "ratio": statistics.median(ratios), "lo": min(ratios), "hi": max(ratios),
        "routes": {k: med[k] for k in routes},
    }


def main():
    args = parse()
    faiss.omp_set_num_threads(1)
    hev = Hashevict(args.lib, args.kernels)
    rng = np.random.default_rng(20261130)
    print(f"FAISS {faiss.__version__} ({faiss.get_compile_options().strip()}), OpenMP threads 1; "
          f"numpy {np.__version__}; Python {platform.python_version()}; {platform.processor() or platform.machine()}")
    print(f"command: {' '.join(sys.argv)}")
    print(f"rounds {args.rounds}, batches of >= {args.batch_ms:g} ms of thread CPU time; ratio = FAISS time / hashevict time, "
          f"paired per round; median (min-max) over the rounds\n")
    nop = hev.lib.hevpeer_nop
    reps = batch_reps(nop, int(args.batch_ms * 1e6))
    print(f"binding: an empty call into the peer library costs {statistics.median(timed(nop, reps) for _ in range(5)):.0f} ns\n")
    print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print("| bits | probes | entries | hashevict µs/call | read loop µs | read / hashevict | FAISS fastest route | FAISS µs/call | × FAISS: median (min–max) | target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    missed = 0
    for bits in ints(args.bits):
        for np_ in ints(args.probes):
            for n in ints(args.entries):
                r = cell(hev, bits, np_, n, args, rng)
                if r is None:
                    print(f"| {bits} | {np_} | {n:,} | | | | no FAISS route gives the same index | | | |")
                    continue
                ok = r["ratio"] >= args.target
                missed += not ok
                others = ", ".join(f"{k} {v / 1e3:.1f}" for k, v in r["routes"].items() if k != r["peer"])
                print(f"| {bits} | {np_} | {n:,} | {r['ours_ns'] / 1e3:.2f} | {r['read_ns'] / 1e3:.2f} | {r['floor']:.2f} | {r['peer']}" + (f" (others: {others})" if others else "") +
                      f" | {r['peer_ns'] / 1e3:.2f} | **{r['ratio']:.2f}** ({r['lo']:.2f}–{r['hi']:.2f}) | {'met' if ok else 'MISSED'} |", flush=True)
    print(f"\n{missed} cell(s) below {args.target}× (by the median ratio); load average at the end: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
