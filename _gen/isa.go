package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// Helpers shared by the AVX-512 and AVX2 variants of a kernel family. The
// variants differ in width and in how they handle a tail (AVX-512 masks it,
// most AVX2 kernels take whole vectors only), so only sequences that are the
// same instruction for instruction live here. They must keep the order in
// which instructions are emitted and registers are created: avo's register
// allocator breaks ties by virtual register number, so creating registers
// in another order can change the generated assembly.

// kernel starts a Go-callable function. All kernels are NOSPLIT and
// noescape (no pointer argument outlives the call); the doc comment is the
// variant's own intro lines followed by the family's shared doc.
func kernel(name, sig string, doc []string, intro ...string) {
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(append(intro, doc...)...)
}

// isa is what an instruction sequence shared by both variants needs to know
// about the vector width.
type isa struct {
	name  string                // kernel name suffix
	vec   func() reg.VecVirtual // allocates a vector register of that width
	lanes int                   // 32-bit lanes per vector
}

var (
	avx512 = isa{"AVX512", ZMM, 16}
	avx2   = isa{"AVX2", YMM, 8}
)

// bytes is the size of one vector.
func (v isa) bytes() int { return 4 * v.lanes }

// movdqu moves a vector of dwords; AVX-512 has no plain VMOVDQU for ZMM.
func (v isa) movdqu(src, dst Op) {
	if v.lanes == 16 {
		VMOVDQU32(src, dst)
	} else {
		VMOVDQU(src, dst)
	}
}

// broadcastD broadcasts the dword in the general-purpose register src to all
// lanes of dst. AVX2's VPBROADCASTD only takes a vector or memory source, so
// there it goes through an XMM register.
func (v isa) broadcastD(src reg.Register, dst reg.VecVirtual) {
	if v.lanes == 16 {
		VPBROADCASTD(src, dst)
		return
	}
	x := XMM()
	MOVD(src, x)
	VPBROADCASTD(x, dst)
}

// countedLoop emits the main loop of a kernel over n elements: label "loop"
// runs body (which also advances the pointers) n >> shift times, once per
// whole vector (or group of vectors), and when there are none the code jumps
// straight to exit.
func countedLoop(n reg.Register, shift int, exit string, body func()) {
	full := GP64()
	MOVQ(n, full)
	SHRQ(U8(shift), full)
	JZ(LabelRef(exit))
	Label("loop")
	body()
	DECQ(full)
	JNZ(LabelRef("loop"))
}

// lowLanes returns an opmask of the lowest cnt lanes, (1 << cnt) - 1, for
// the masked tail of an AVX-512 kernel (cnt < 16).
func lowLanes(cnt reg.Register) reg.OpmaskVirtual {
	m := GP64()
	MOVQ(U32(1), m)
	SHLXQ(cnt, m, m)
	DECQ(m)
	k := K()
	KMOVW(m.As32(), k)
	return k
}

// maskedTail emits label "tail" of an AVX-512 kernel whose loop has done the
// whole vectors: one step over the last n % 16 elements under a lane mask,
// skipped (to "done") when there are none.
func maskedTail(n reg.Register, step func(k reg.Register)) {
	Label("tail")
	r := GP64()
	MOVQ(n, r)
	ANDQ(U8(15), r)
	JZ(LabelRef("done"))
	step(lowLanes(r))
}
