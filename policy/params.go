// Package policy implements the HashEvict algorithm and its baselines: the
// per-layer projections, the per-sequence slot and position tables, the
// scores, the protections and the choice of victims. It is pure Go; the C
// ABI lives in package capi and the hot loops in package simd.
package policy

import (
	"math"
	"unsafe"

	"github.com/hashevict/hashevict/simd"
)

// Mode is how the runtime stores its cache.
type Mode int32

const (
	ModeSlot  Mode = 0 // the runtime keeps Budget slots per (seq, layer, KV head)
	ModeToken Mode = 1 // the runtime drops whole positions (stock llama.cpp)
)

// Policy chooses what a score means.
type Policy int32

const (
	PolicyHash       Policy = 0
	PolicySinkRecent Policy = 1
	PolicyKnorm      Policy = 2
	PolicyRandom     Policy = 3
	PolicyOracle     Policy = 4
)

// Probe says which vector of the current token is hashed.
type Probe int32

const (
	ProbeQuery Probe = 0
	ProbeKey   Probe = 1
)

// Score says how step distances are folded over time.
type Score int32

const (
	ScoreInstant     Score = 0
	ScoreAccumulated Score = 1
	ScoreDecayed     Score = 2
)

// Estimate says what a hash score estimates from a slot's code (streamscore.go).
type Estimate int32

const (
	EstimateDistance Estimate = 0 // the paper: the Hamming distance to the probes
	EstimateLogit    Estimate = 1 // the attention logit, from the distance and the norms
)

// Params configures an engine. Start from DefaultParams: a zero field is
// taken literally (and refused where zero is invalid), not as "default".
type Params struct {
	Mode           Mode
	Policy         Policy
	Probe          Probe
	Score          Score
	Layers         int
	KVHeads        int
	QHeads         int
	HeadDim        int
	Bits           int
	Budget         int
	Sinks          int
	Recent         int
	MaxSeqs        int
	Decay          float32
	Seed           uint64
	MemoryCapBytes uint64
	// Streaming options of the hash policy (streamscore.go); the zero
	// values are the paper's policy.
	Estimate   Estimate
	Redundancy float32
}

// Defaults of the optional parameters, as documented in hashevict.h.
const (
	DefaultBits    = 16
	DefaultSinks   = 4
	DefaultRecent  = 10
	DefaultMaxSeqs = 64
	DefaultDecay   = 0.9

	MaxHeadDim = 4096
	MaxHeads   = 1024
	MaxLayers  = 1024
	MaxBudget  = 1 << 24
	MaxSeqs    = 1 << 16

	// MaxRedundancy bounds the redundancy weight: a larger one would let
	// the redundancy term alone decide, which is a different policy.
	MaxRedundancy = 64
)

// DefaultParams returns the documented defaults; the shape fields are zero.
func DefaultParams() Params {
	return Params{
		Bits:    DefaultBits,
		Sinks:   DefaultSinks,
		Recent:  DefaultRecent,
		MaxSeqs: DefaultMaxSeqs,
		Decay:   DefaultDecay,
	}
}

// SupportedBits lists the code widths an engine accepts.
var SupportedBits = []int{8, 16, 32, 64, 128, 256}

func paramErr(format string, args ...any) error {
	return errf(CodeInvalidParams, format, args...)
}

// Validate checks every field and returns a ParamError naming the first
// field that is wrong.
func (p *Params) Validate() error {
	switch p.Mode {
	case ModeSlot, ModeToken:
	default:
		return paramErr("mode %d is not a hashevict_mode (0 slot, 1 token)", p.Mode)
	}
	if p.Policy < PolicyHash || p.Policy > PolicyOracle {
		return paramErr("policy %d is not a hashevict_policy (0..4)", p.Policy)
	}
	if p.Probe != ProbeQuery && p.Probe != ProbeKey {
		return paramErr("probe %d is not a hashevict_probe (0 query, 1 key)", p.Probe)
	}
	if p.Score < ScoreInstant || p.Score > ScoreDecayed {
		return paramErr("score %d is not a hashevict_score (0..2)", p.Score)
	}
	if p.Layers < 1 || p.Layers > MaxLayers {
		return paramErr("n_layers = %d, want 1..%d", p.Layers, MaxLayers)
	}
	if p.KVHeads < 1 || p.KVHeads > MaxHeads {
		return paramErr("n_kv_heads = %d, want 1..%d", p.KVHeads, MaxHeads)
	}
	if p.QHeads < 1 || p.QHeads > MaxHeads || p.QHeads%p.KVHeads != 0 {
		return paramErr("n_q_heads = %d, want a multiple of n_kv_heads (%d) up to %d", p.QHeads, p.KVHeads, MaxHeads)
	}
	if p.HeadDim < 1 || p.HeadDim > MaxHeadDim {
		return paramErr("head_dim = %d, want 1..%d", p.HeadDim, MaxHeadDim)
	}
	okBits := false
	for _, b := range SupportedBits {
		okBits = okBits || b == p.Bits
	}
	if !okBits {
		return paramErr("hash_bits = %d, want one of %v", p.Bits, SupportedBits)
	}
	if p.Sinks < 0 || p.Recent < 0 {
		return paramErr("n_sink = %d and n_recent = %d must not be negative", p.Sinks, p.Recent)
	}
	if p.Budget < 1 || p.Budget > MaxBudget {
		return paramErr("budget = %d, want 1..%d", p.Budget, MaxBudget)
	}
	if p.Budget <= p.Sinks+p.Recent {
		return paramErr("budget = %d must exceed n_sink + n_recent = %d + %d, or nothing could ever be evicted", p.Budget, p.Sinks, p.Recent)
	}
	if p.MaxSeqs < 1 || p.MaxSeqs > MaxSeqs {
		return paramErr("max_seqs = %d, want 1..%d", p.MaxSeqs, MaxSeqs)
	}
	if !(p.Decay > 0 && p.Decay < 1) {
		return paramErr("decay = %v, want a value in (0, 1)", p.Decay)
	}
	if p.Estimate != EstimateDistance && p.Estimate != EstimateLogit {
		return paramErr("estimate %d is not a hashevict_estimate (0 distance, 1 logit)", p.Estimate)
	}
	if !(p.Redundancy >= 0 && p.Redundancy <= MaxRedundancy) {
		return paramErr("redundancy = %v, want a weight in [0, %d] (0: off)", p.Redundancy, MaxRedundancy)
	}
	if p.streaming() && p.Policy != PolicyHash {
		return paramErr("estimate = %d and redundancy = %v shape the hash policy's score; policy %d has its own (leave them at 0)", p.Estimate, p.Redundancy, p.Policy)
	}
	// The memory bound is checked by NewEngine: it depends on the machine.
	return nil
}

// streaming reports whether a streaming option (streamscore.go) is set.
func (p *Params) streaming() bool {
	return p.Estimate != EstimateDistance || p.Redundancy != 0
}

// keyFloats is how many floats a table keeps per slot besides its code:
// the oracle's key, the logit estimate's key norm.
func (p *Params) keyFloats() int {
	switch {
	case p.Policy == PolicyOracle:
		return p.HeadDim
	case p.Estimate == EstimateLogit:
		return 1
	}
	return 0
}

// Words is the number of uint64 words of one code.
func (p *Params) Words() int { return (p.Bits + 63) / 64 }

// Group is the number of query heads per KV head.
func (p *Params) Group() int { return p.QHeads / p.KVHeads }

// slotBytes is the state of one cached token for one (layer, KV head); a
// table of n slots takes n·slotBytes rounded up to whole words of codes.
func (p *Params) slotBytes() uint64 {
	code := uint64(p.Words()) * 8
	if simd.Narrow(p.Bits) {
		code = uint64(p.Bits / 8) // narrow codes share words
	}
	b := code + 4 /*score*/ + 4 /*count*/ + 4 /*position*/
	return b + uint64(p.keyFloats())*4
}

// codeWords is the number of words of a table of n codes.
func (p *Params) codeWords(n int) int { return simd.CodeWords(p.Bits, n) }

// The memory model: what an engine counts against its bound (memory.go),
// sized from the parameters before anything is allocated. Every figure
// saturates at MaxUint64, which no bound admits.

// Go's sizes of the structures an engine allocates per sequence, layer and
// table, besides their arrays.
const (
	seqHeaderBytes   = uint64(unsafe.Sizeof(Sequence{}))
	layerHeaderBytes = uint64(unsafe.Sizeof(layerState{}))
	tableHeaderBytes = uint64(unsafe.Sizeof(table{}))
	tokenHeaderBytes = uint64(unsafe.Sizeof(tokenState{}))
	sliceHeaderBytes = uint64(unsafe.Sizeof([]byte(nil)))
)

// engineBytes is what create allocates: the projections (n_layers matrices
// of hash_bits x head_dim f32) and the sequence directory.
func (p *Params) engineBytes() uint64 {
	proj := satMul(uint64(p.Layers), uint64(p.Bits), uint64(p.HeadDim), 4)
	return satAdd(proj, uint64(p.Layers)*sliceHeaderBytes, uint64(p.MaxSeqs)*8)
}

// slotScratchBytes is the step scratch per table slot that a sequence keeps
// (it grows with the tables, not with the chunk): distances, unpacked narrow
// codes, the candidates and the token-mode sums, the list of positions
// returned to the caller; the oracle adds its entry list and logits.
func (p *Params) slotScratchBytes() uint64 {
	b := uint64(4 + 8 + 8 + 8 + 4)
	if p.Policy == PolicyOracle {
		b += 8 + 8
	}
	if p.streaming() {
		// streamscore.go: the entry list, the float64 sums, the step
		// scores and one probe's distances.
		b += 8 + 8 + 4 + 4
	}
	return b
}

// chunkScratchBytes is the step scratch of a chunk of n tokens: the codes
// of its keys (and queries with the query probe), one head's probes, the key
// norms, the oracle's copies of the rows and sums, and the per-token arrays
// of place and observe.
func (p *Params) chunkScratchBytes(n int) uint64 {
	w := uint64(p.Words()) * 8
	kv, qh := uint64(p.KVHeads), uint64(p.QHeads)
	per := satAdd(kv*w, 4+4+8)
	switch p.Policy {
	case PolicyHash:
		per = satAdd(per, w*uint64(1+p.Group()))
		if p.Probe == ProbeQuery {
			per = satAdd(per, qh*w)
		}
		if p.Estimate == EstimateLogit {
			// The norms of the keys, the queries and one head's probes.
			per = satAdd(per, kv*4, qh*4, uint64(p.Group())*4)
		}
	case PolicyKnorm:
		per = satAdd(per, kv*4)
	case PolicyOracle:
		per = satAdd(per, (kv+qh)*uint64(p.HeadDim)*4, 8+8)
	}
	// Fixed: a decoded row, the bit counts over many probes, the skip list,
	// and above 64 bits simd's lookup tables for the counts (a byte-indexed
	// table per code byte, 32 KiB at 256 bits; narrower ones live on the
	// stack).
	fixed := uint64(p.HeadDim)*4 + uint64(p.Bits)*4 + uint64(p.Sinks+p.Recent)*4 + 8
	if p.Bits > 64 {
		fixed += uint64(p.Bits/8) * 256 * 4
	}
	if p.streaming() {
		// streamscore.go: the majority's bit counts and code, the cosines.
		fixed += uint64(p.Bits)*4 + uint64(p.Words())*8 + uint64(p.Bits+1)*8
	}
	return satAdd(fixed, satMul(per, uint64(max(n, 0))))
}

// seqBaseBytes is what a sequence holds whatever its tokens: its headers per
// layer and per table, the token-mode bookkeeping per layer, and the scratch
// of a one-token step.
func (p *Params) seqBaseBytes() uint64 {
	L, H := uint64(p.Layers), uint64(p.KVHeads)
	b := satAdd(seqHeaderBytes, satMul(L, satAdd(layerHeaderBytes, H*tableHeaderBytes)), p.chunkScratchBytes(1))
	if p.Mode == ModeToken {
		// Per layer: the observed flags' slice and a counter.
		b = satAdd(b, tokenHeaderBytes, L*(sliceHeaderBytes+8))
	}
	return b
}

// heldBytes is what a sequence whose tables have `capacity` slots is
// accounted: the base, every table, and (slot mode) the guards and the
// per-slot scratch; token mode's per-slot figure has its own.
func (p *Params) heldBytes(capacity int) int64 {
	c := uint64(max(capacity, 0))
	if p.Mode == ModeToken {
		return clampInt64(satAdd(p.seqBaseBytes(), satMul(c, p.tokenSlotBytes())))
	}
	guards := satMul(uint64(p.Sinks+p.Recent), 4, uint64(p.Layers), uint64(p.KVHeads))
	return clampInt64(satAdd(p.seqBaseBytes(), p.SeqBytes(capacity), guards, satMul(c, p.slotScratchBytes())))
}

// tokenSlotBytes is what token mode accounts per slot: every table's entry
// plus the per-layer observed flags, the seen count, the free list entry,
// the position index, the list of positions not yet seen by every layer,
// the per-slot scratch, and the running total and combined codes of the
// fast decode step.
func (p *Params) tokenSlotBytes() uint64 {
	return satAdd(p.SeqBytes(1), uint64(p.Layers), 4+4+16+8, p.slotScratchBytes(), 4, satMul(uint64(p.Layers), 8*uint64(p.combWords())))
}

// initialSlots is the capacity of a new sequence's tables: slot mode
// allocates the full budget at once, token mode grows with the positions.
func (p *Params) initialSlots() int {
	if p.Mode == ModeSlot {
		return p.Budget
	}
	return 0
}

// budgetBytes is the least memory_cap_bytes create accepts: the engine and
// one sequence at full budget, as accounted by its mode (token mode holds
// budget + 1 positions between a decode step and its eviction).
func (p *Params) budgetBytes() uint64 {
	full := p.Budget
	if p.Mode == ModeToken {
		full++
	}
	return satAdd(p.engineBytes(), uint64(p.heldBytes(full)))
}

// SeqBytes estimates the state of one sequence holding `tokens` tokens.
func (p *Params) SeqBytes(tokens int) uint64 {
	per := p.slotBytes() * uint64(p.Layers) * uint64(p.KVHeads)
	if per != 0 && uint64(tokens) > math.MaxUint64/per {
		return math.MaxUint64
	}
	// Narrow tables round their codes up to whole words.
	pad := uint64(0)
	if simd.Narrow(p.Bits) && tokens*p.Bits%64 != 0 {
		pad = uint64(8-tokens*p.Bits%64/8) * uint64(p.Layers) * uint64(p.KVHeads)
	}
	if per*uint64(tokens) > math.MaxUint64-pad {
		return math.MaxUint64
	}
	return per*uint64(tokens) + pad
}
