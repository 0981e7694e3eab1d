package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// genMaxU32 writes maxU32AVX512 (zmm) or maxU32AVX2: the largest of n
// uint32, n a positive multiple of the four registers a pass reads. The
// instant-score scan (Farthest) calls it on each block of distances and
// looks for the index only in the rare block that raises the maximum.
func genMaxU32(zmm bool) {
	name, lanes := "maxU32AVX2", 8
	if zmm {
		name, lanes = "maxU32AVX512", 16
	}
	per := 4 * lanes
	TEXT(name, NOSPLIT, "func(x *uint32, n int) uint32")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s returns the largest of x[0:n], n a positive multiple of %d:", name, per), "",
		"\tm := x[0]",
		"\tfor _, v := range x[1:n] {",
		"\t\tm = max(m, v)",
		"\t}",
		"\treturn m")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	vec := func() reg.VecVirtual {
		if zmm {
			return ZMM()
		}
		return YMM()
	}
	var acc [4]reg.VecVirtual
	for i := range acc {
		acc[i] = vec()
		if zmm {
			VMOVDQU32(Mem{Base: x, Disp: 4 * lanes * i}, acc[i])
		} else {
			VMOVDQU(Mem{Base: x, Disp: 4 * lanes * i}, acc[i])
		}
	}
	ADDQ(U32(4*per), x)
	SUBQ(U32(per), n)
	Label(name + "_loop")
	JZ(LabelRef(name + "_reduce"))
	for i := range acc {
		VPMAXUD(Mem{Base: x, Disp: 4 * lanes * i}, acc[i], acc[i])
	}
	ADDQ(U32(4*per), x)
	SUBQ(U32(per), n)
	JMP(LabelRef(name + "_loop"))

	Label(name + "_reduce")
	VPMAXUD(acc[1], acc[0], acc[0])
	VPMAXUD(acc[3], acc[2], acc[2])
	VPMAXUD(acc[2], acc[0], acc[0])
	var y reg.Register = acc[0]
	if zmm {
		hi := YMM()
		VEXTRACTI64X4(U8(1), acc[0], hi)
		y = acc[0].AsY()
		VPMAXUD(hi, y, y)
	}
	hx := XMM()
	VEXTRACTI128(U8(1), y, hx)
	xl := acc[0].AsX()
	VPMAXUD(hx, xl, xl)
	t := XMM()
	VPSHUFD(U8(0x4e), xl, t) // swap the qwords
	VPMAXUD(t, xl, xl)
	VPSHUFD(U8(0xb1), xl, t) // swap the dwords of each qword
	VPMAXUD(t, xl, xl)
	m := GP32()
	VMOVD(xl, m)
	Store(m, ReturnIndex(0))
	VZEROUPPER()
	RET()
}
