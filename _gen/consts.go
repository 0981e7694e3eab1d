package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
)

// Read-only tables shared by the kernels of package simd.
var (
	maskTab     Mem // 16 int32 -1 then 16 int32 0: tail lane masks
	nibbleLUT   Mem // popcount of 0..15, twice (VPSHUFB works per 128 bits)
	lowNibbles  Mem // 32 bytes 0x0f
	interleave8 Mem // dword order 0,4,1,5,2,6,3,7
	evenQ       Mem // qword indices 0,2,...,14 (VPERMT2Q)
	oddQ        Mem // qword indices 1,3,...,15
	iota16      Mem // int32 0..15
)

func simdConsts() {
	maskTab = GLOBL("maskTab", RODATA|NOPTR)
	for i := 0; i < 32; i++ {
		v := uint32(0)
		if i < 16 {
			v = 0xffffffff
		}
		DATA(4*i, U32(v))
	}
	nibbleLUT = GLOBL("nibbleLUT", RODATA|NOPTR)
	for i := 0; i < 32; i++ {
		v := 0
		for b := i & 15; b != 0; b &= b - 1 {
			v++
		}
		DATA(i, U8(v))
	}
	lowNibbles = GLOBL("lowNibbles", RODATA|NOPTR)
	for i := 0; i < 32; i++ {
		DATA(i, U8(0x0f))
	}
	interleave8 = GLOBL("interleave8", RODATA|NOPTR)
	for i, v := range []uint32{0, 4, 1, 5, 2, 6, 3, 7} {
		DATA(4*i, U32(v))
	}
	evenQ = GLOBL("evenQ", RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(8*i, U64(uint64(2*i)))
	}
	oddQ = GLOBL("oddQ", RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(8*i, U64(uint64(2*i+1)))
	}
	iota16 = GLOBL("iota16", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(4*i, U32(uint32(i)))
	}
}
