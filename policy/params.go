// Package policy implements the HashEvict algorithm and its baselines: the
// per-layer projections, the per-sequence slot and position tables, the
// scores, the protections and the choice of victims. It is pure Go; the C
// ABI lives in package capi and the hot loops in package simd.
package policy

import (
	"math"

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
	if p.MemoryCapBytes != 0 {
		if need := p.budgetBytes(); need > p.MemoryCapBytes {
			return errf(CodeMemoryCap, "one sequence at full budget needs %d bytes, above memory_cap_bytes = %d", need, p.MemoryCapBytes)
		}
	}
	return nil
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
	if p.Policy == PolicyOracle {
		b += uint64(p.HeadDim) * 4
	}
	return b
}

// codeWords is the number of words of a table of n codes.
func (p *Params) codeWords(n int) int { return simd.CodeWords(p.Bits, n) }

// tokenSlotBytes is what token mode accounts per slot: every table's entry
// plus the per-layer observed flags, the seen count, the free list entry
// and the position index.
func (p *Params) tokenSlotBytes() uint64 {
	return p.SeqBytes(1) + uint64(p.Layers) + 4 + 4 + 16
}

// budgetBytes is the state of one sequence at full budget, as accounted by
// its mode; an engine whose cap cannot hold it is refused at create. Token
// mode holds budget + 1 positions between a decode step and its eviction.
func (p *Params) budgetBytes() uint64 {
	if p.Mode == ModeToken {
		return p.tokenSlotBytes() * uint64(p.Budget+1)
	}
	// Plus each slot table's guard (the slots of sinks and recent tokens).
	guards := uint64(p.Sinks+p.Recent) * 4 * uint64(p.Layers) * uint64(p.KVHeads)
	return p.SeqBytes(p.Budget) + guards
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
