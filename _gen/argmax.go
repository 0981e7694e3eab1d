package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// ArgmaxIn, lane-parallel. Lane l sees indices l, l+L, l+2L, ... in
// increasing order and keeps
//
//	best[l], bidx[l]: the largest non-NaN score among its qualifying
//	                  entries (lo <= pos < hi), the first such index on ties
//	                  (strict >), bidx = -1 when it has none;
//	fidx[l]:          its first qualifying index (NaN or not), MaxInt32 if none.
//
// The Go wrapper reduces the lanes: the answer is the overall first
// qualifying index when its score is NaN (as in the Go loop, where a NaN
// taken first is never beaten), otherwise the lowest index holding the
// largest lane best.

var argmaxDoc = []string{
	"state holds best[0:L] (float32 bits), bidx[L:2L] and fidx[2L:3L] of the L lanes",
	"(initially -Inf, -1, MaxInt32) and is updated; entry i has index base+i:",
	"",
	"\tfor i := 0; i < n; i++ {",
	"\t\tl := i % L",
	"\t\tif pos[i] < lo || pos[i] >= hi {",
	"\t\t\tcontinue",
	"\t\t}",
	"\t\tif fidx[l] == math.MaxInt32 {",
	"\t\t\tfidx[l] = base + i",
	"\t\t}",
	"\t\ts := score[i]",
	"\t\tif s == s && (bidx[l] < 0 || s > best[l]) {",
	"\t\t\tbest[l], bidx[l] = s, base+i",
	"\t\t}",
	"\t}",
}

// Two sets of lanes (32 lanes with AVX-512, 16 with AVX2) take alternate
// vectors, so that the compare-and-blend chains of consecutive vectors do
// not wait for each other. Every lane still sees its entries in increasing
// index order, which is all the reduction needs.

// lanes is the state of one set of lanes (cur: the indices of the entries
// its next vector holds).
type lanes struct {
	best, bidx, fidx, cur reg.VecVirtual
}

// argmaxArgs are the loaded parameters of an argmax kernel; lo and hi (the
// bounds on pos) are broadcast to every lane.
type argmaxArgs struct {
	score, pos, n, base, out reg.Register
	lo, hi                   reg.VecVirtual
}

// argmaxKernel starts the kernel "argmax"+v.name, documented by intro, and
// loads its parameters. hiParam names the upper bound: AVX2 takes hi-1
// (see genArgmaxAVX2).
func argmaxKernel(v isa, hiParam string, intro ...string) argmaxArgs {
	sig := fmt.Sprintf("func(score *float32, pos *int32, n int, lo int32, %s int32, base int32, state *[%d]uint32)", hiParam, 6*v.lanes)
	kernel("argmax"+v.name, sig, argmaxDoc, intro...)
	var a argmaxArgs
	a.score = Load(Param("score"), GP64())
	a.pos = Load(Param("pos"), GP64())
	a.n = Load(Param("n"), GP64())
	lo32 := Load(Param("lo"), GP32())
	hi32 := Load(Param(hiParam), GP32())
	a.base = Load(Param("base"), GP32())
	a.out = Load(Param("state"), GP64())

	a.lo, a.hi = v.vec(), v.vec()
	v.broadcastD(lo32, a.lo)
	v.broadcastD(hi32, a.hi)
	return a
}

// The state holds best, then bidx, then fidx, each as one vector per lane
// set, set 0 first.

// loadLanes allocates the registers of lane set i and loads its state.
func loadLanes(v isa, out reg.Register, i int) lanes {
	var l lanes
	l.best, l.bidx, l.fidx, l.cur = v.vec(), v.vec(), v.vec(), v.vec()
	vb := v.bytes()
	VMOVUPS(Mem{Base: out, Disp: vb * i}, l.best)
	v.movdqu(Mem{Base: out, Disp: 2*vb + vb*i}, l.bidx)
	v.movdqu(Mem{Base: out, Disp: 4*vb + vb*i}, l.fidx)
	return l
}

// argmaxStore emits label "store", which writes the state of the lane sets
// back and returns.
func argmaxStore(v isa, out reg.Register, set ...lanes) {
	Label("store")
	vb := v.bytes()
	for i, l := range set {
		VMOVUPS(l.best, Mem{Base: out, Disp: vb * i})
		v.movdqu(l.bidx, Mem{Base: out, Disp: 2*vb + vb*i})
		v.movdqu(l.fidx, Mem{Base: out, Disp: 4*vb + vb*i})
	}
	VZEROUPPER()
	RET()
}

// lanes512 adds the AVX-512 lanes' masks: seen when the lane has a best,
// qseen when it has had a qualifying entry.
type lanes512 struct {
	lanes
	seen, qseen reg.OpmaskVirtual
}

func genArgmaxAVX512() {
	a := argmaxKernel(avx512, "hi", "argmaxAVX512 scans n entries in L = 32 lanes, two sets of 16 taking alternate",
		"vectors of 16 entries (a masked load covers n % 16).")
	score, pos, n, out := a.score, a.pos, a.n, a.out
	lo, hi := a.lo, a.hi
	t := GP32()
	step, zero, maxi := ZMM(), ZMM(), ZMM()
	MOVL(U32(32), t)
	VPBROADCASTD(t, step)
	VPXORD(zero, zero, zero)
	MOVL(U32(0x7fffffff), t)
	VPBROADCASTD(t, maxi)
	var set [2]lanes512
	for i := range set {
		l := &set[i]
		l.lanes = loadLanes(avx512, out, i)
		VPBROADCASTD(a.base, l.cur)
		VPADDD(iota16, l.cur, l.cur) // set i covers base + 32k + 16i + lane
		if i == 1 {
			MOVL(U32(16), t)
			c := ZMM()
			VPBROADCASTD(t, c)
			VPADDD(c, l.cur, l.cur)
		}
		// A lane has a best when bidx >= 0, a qualifying entry when fidx != MaxInt32.
		l.seen, l.qseen = K(), K()
		VPCMPD(U8(5), zero, l.bidx, l.seen)
		VPCMPD(U8(4), maxi, l.fidx, l.qseen)
	}
	// body folds one vector (qualifying mask kq, scores s) into lane set l.
	body := func(l *lanes512, kq reg.Register, s reg.VecVirtual) {
		kgt, knew, kupd, kf := K(), K(), K(), K()
		VCMPPS(U8(0x1E), l.best, s, kq, kgt) // s > best (GT_OQ)
		KANDNW(kq, l.seen, knew)             // qualifying, lane has no best yet
		VCMPPS(U8(0x07), s, s, knew, knew)   // ... and s is not NaN (ORD_Q)
		KORW(kgt, knew, kupd)
		VMOVAPS(s, kupd, l.best)
		VMOVDQA32(l.cur, kupd, l.bidx)
		KORW(kupd, l.seen, l.seen)
		KANDNW(kq, l.qseen, kf)
		VMOVDQA32(l.cur, kf, l.fidx)
		KORW(kq, l.qseen, l.qseen)
		VPADDD(step, l.cur, l.cur)
	}
	// vector loads 16 entries at disp (masked by km when not nil) into set l.
	vector := func(l *lanes512, disp int, km reg.Register) {
		p, s := ZMM(), ZMM()
		kq := K()
		if km == nil {
			VMOVDQU32(Mem{Base: pos, Disp: disp}, p)
			VMOVUPS(Mem{Base: score, Disp: disp}, s)
			VPCMPD(U8(5), lo, p, kq) // p >= lo (NLT)
		} else {
			VMOVDQU32_Z(Mem{Base: pos, Disp: disp}, km, p)
			VMOVUPS_Z(Mem{Base: score, Disp: disp}, km, s)
			VPCMPD(U8(5), lo, p, km, kq)
		}
		VPCMPD(U8(1), hi, p, kq, kq) // and p < hi (LT)
		body(l, kq, s)
	}

	countedLoop(n, 5, "half", func() {
		vector(&set[0], 0, nil)
		vector(&set[1], 64, nil)
		ADDQ(U8(128), pos)
		ADDQ(U8(128), score)
	})

	// Then at most one full vector (set 0) and a masked one (the next set).
	Label("half")
	r := GP64()
	MOVQ(n, r)
	ANDQ(U8(31), r)
	m := GP64()
	MOVQ(U32(1), m)
	kt := K()
	CMPQ(r, U8(16))
	JB(LabelRef("tail0"))
	vector(&set[0], 0, nil)
	ADDQ(U8(64), pos)
	ADDQ(U8(64), score)
	SUBQ(U8(16), r)
	JZ(LabelRef("store"))
	SHLXQ(r, m, m)
	DECQ(m)
	KMOVW(m.As32(), kt)
	vector(&set[1], 0, kt)
	JMP(LabelRef("store"))
	Label("tail0")
	TESTQ(r, r)
	JZ(LabelRef("store"))
	SHLXQ(r, m, m)
	DECQ(m)
	KMOVW(m.As32(), kt)
	vector(&set[0], 0, kt)

	argmaxStore(avx512, out, set[0].lanes, set[1].lanes)
}

// The AVX2 set has 16 registers, too few for the masks of two lane sets,
// so it keeps no "seen" masks: a lane without a best has best = NaN
// (initially), which no score beats, and takes any non-NaN score; the
// first qualifying index is the unsigned minimum of cur | not-qualifying.
func genArgmaxAVX2() {
	a := argmaxKernel(avx2, "hmax", "argmaxAVX2 scans n entries (n % 8 == 0) in L = 16 lanes, two sets of 8 taking",
		"alternate vectors of 8 entries. It takes hmax = hi-1 (hi > lo), and needs best = NaN",
		"in the lanes that have no best.")
	score, pos, out := a.score, a.pos, a.out
	lo, hmax := a.lo, a.hi
	t := GP32()
	step := YMM()
	MOVL(U32(16), t)
	avx2.broadcastD(t, step)
	var set [2]lanes
	for i := range set {
		l := &set[i]
		*l = loadLanes(avx2, out, i)
		avx2.broadcastD(a.base, l.cur)
		VPADDD(iota16.Offset(32*i), l.cur, l.cur) // set i covers base + 16k + 8i + lane
	}
	vector := func(l *lanes, disp int) {
		p, nq := YMM(), YMM()
		VMOVDQU(Mem{Base: pos, Disp: disp}, p)
		VPCMPGTD(p, lo, nq)  // lo > p
		VPCMPGTD(hmax, p, p) // p > hi-1
		VPOR(p, nq, nq)      // not qualifying
		s, gt, u := YMM(), YMM(), YMM()
		VMOVUPS(Mem{Base: score, Disp: disp}, s)
		VCMPPS(U8(0x1E), l.best, s, gt)     // s > best (GT_OQ)
		VCMPPS(U8(0x03), l.best, l.best, u) // the lane has no best (best is NaN)
		VCMPPS(U8(0x07), s, s, p)           // s is not NaN (ORD_Q)
		VPAND(p, u, u)
		VPOR(u, gt, gt)
		VPANDN(gt, nq, gt) // and qualifying
		VBLENDVPS(gt, s, l.best, l.best)
		VBLENDVPS(gt, l.cur, l.bidx, l.bidx)
		VPOR(l.cur, nq, nq)
		VPMINUD(nq, l.fidx, l.fidx)
		VPADDD(step, l.cur, l.cur)
	}

	countedLoop(a.n, 4, "half", func() {
		vector(&set[0], 0)
		vector(&set[1], 32)
		ADDQ(U8(64), pos)
		ADDQ(U8(64), score)
	})
	Label("half")
	TESTQ(U32(8), a.n)
	JZ(LabelRef("store"))
	vector(&set[0], 0)

	argmaxStore(avx2, out, set[:]...)
}
