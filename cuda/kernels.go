package cuda

import (
	"github.com/hashevict/hashevict/policy"
)

// The launchers queue kernels on a stream and return at once: nothing here
// waits for the device unless a result must come back to the host (the
// caller decides, with Download or Sync). Every device pointer is the
// caller's; sizes are checked here so that a kernel never reads out of the
// ranges they describe.

// Rows is a device tensor of rows [token][head][dim], elements contiguous,
// strides in bytes (policy.Rows on the device).
type Rows struct {
	Data        Ptr
	DType       policy.DType
	Dim         int
	Heads       int
	Tokens      int
	HeadStride  int64
	TokenStride int64
}

const hashThreads = 256

// aligned refuses a device pointer that is not a multiple of size: a
// misaligned access is a sticky error that ruins the whole CUDA context,
// the caller's included, so it must never reach a kernel.
func aligned(size uintptr, what string, ps ...Ptr) error {
	for _, p := range ps {
		if uintptr(p)%size != 0 {
			return fail(policy.CodeInvalidArgument, "%s at %#x is not aligned to %d bytes", what, uintptr(p), size)
		}
	}
	return nil
}

// Hash writes the wide codes of every row of x, [token][head][words], into
// codes, with rt the layer's projection (bits rows of x.Dim float32, as
// policy.Projection returns it) in device memory. *bad (a device uint32)
// receives the lowest row index (token*heads + head) holding NaN or Inf, or
// 0xffffffff when every row is finite; such rows get a zero code.
func (v *Device) Hash(s Stream, x Rows, rt Ptr, bits int, codes, bad Ptr) error {
	if err := checkBits(bits); err != nil {
		return err
	}
	if x.Dim > policy.MaxHeadDim {
		return fail(policy.CodeShape, "head_dim %d is above %d", x.Dim, policy.MaxHeadDim)
	}
	if _, err := policy.Extent(x.DType, x.Dim, x.Heads, x.Tokens, x.HeadStride, x.TokenStride); err != nil {
		return err
	}
	rows := x.Tokens * x.Heads
	if int64(x.Tokens)*int64(x.Heads) >= 1<<31 {
		return fail(policy.CodeShape, "hash: %d tokens x %d heads: at most 2^31-1 rows per call", x.Tokens, x.Heads)
	}
	if x.Data == 0 || rt == 0 || codes == 0 || bad == 0 {
		return fail(policy.CodeInvalidArgument, "hash: a device pointer is NULL")
	}
	if err := aligned(uintptr(x.DType.Size()), "hash: the rows", x.Data); err != nil {
		return err
	}
	if err := aligned(8, "hash: the codes", codes); err != nil {
		return err
	}
	if err := aligned(4, "hash: the projection or the bad-row word", rt, bad); err != nil {
		return err
	}
	if err := v.Fill32(s, bad, 0xffffffff, 1); err != nil {
		return err
	}
	grid := [3]int{rows, 1, 1}
	const maxX = 1 << 30
	if rows > maxX {
		grid = [3]int{maxX, (rows + maxX - 1) / maxX, 1}
	}
	a := new(args).ptr(x.Data).i32(int(x.DType)).i32(x.Dim).i32(x.Heads).i32(rows).
		i64(x.HeadStride).i64(x.TokenStride).ptr(rt).i32(bits).ptr(codes).ptr(bad)
	return v.launch(s, kHash, grid, hashThreads, 4*x.Dim, a)
}

// Tables are the code tables of several KV heads (one layer of one
// sequence), each with Slots codes in the layout of simd.CodeWords, head h
// at Codes + h*Stride words; Score and Count (float32, uint32) hold head
// h's entries at h*ScoreStride.
type Tables struct {
	Codes       Ptr
	Stride      int64
	Bits        int
	Slots       int
	Heads       int
	Score       Ptr
	Count       Ptr
	ScoreStride int64
}

// Probes are a step's probe codes (wide), for KV head h and probe (t, j),
// t < Tokens, j < PerToken, at Codes + h*HeadStride + t*TokenStride +
// j*words words. With query probes and hev_hash's output of q
// ([token][q head][words]): HeadStride = group*words, TokenStride =
// q_heads*words, PerToken = group; with key probes: HeadStride = words,
// TokenStride = kv_heads*words, PerToken = 1.
type Probes struct {
	Codes       Ptr
	HeadStride  int64
	TokenStride int64
	PerToken    int
	Tokens      int
}

// Skip lists, per KV head, the slots a step must not evict: Count[h]
// (device int32) entries, ascending, at Slots + h*Stride (device int32).
// A zero Count means no slot is skipped.
type Skip struct {
	Slots  Ptr
	Stride int
	Count  Ptr
}

// Limits of the scan kernels' shared memory (hashevict.cu).
const (
	MaxProbeWords = 1024
	scanThreads   = 256
)

func (t *Tables) check(needScores bool) error {
	if err := checkBits(t.Bits); err != nil {
		return err
	}
	if t.Codes == 0 || t.Slots < 1 || t.Heads < 1 || t.Heads > 65535 {
		return fail(policy.CodeInvalidArgument, "tables: %d slots, %d heads at %#x", t.Slots, t.Heads, uintptr(t.Codes))
	}
	if int64(t.Slots) >= 1<<31-1 {
		return fail(policy.CodeShape, "tables of %d slots: at most 2^31-2", t.Slots)
	}
	if need := int64(codeWords(t.Bits, t.Slots)); t.Stride < need && t.Heads > 1 {
		return fail(policy.CodeShape, "tables: head stride %d words is below the %d words of %d codes", t.Stride, need, t.Slots)
	}
	if err := aligned(8, "tables: the codes", t.Codes); err != nil {
		return err
	}
	if needScores {
		if t.Score == 0 || t.Count == 0 {
			return fail(policy.CodeInvalidArgument, "tables: scores or counts are NULL")
		}
		if err := aligned(4, "tables: the scores or counts", t.Score, t.Count); err != nil {
			return err
		}
		if t.ScoreStride < int64(t.Slots) && t.Heads > 1 {
			return fail(policy.CodeShape, "tables: score stride %d is below %d slots", t.ScoreStride, t.Slots)
		}
	}
	return nil
}

func (p *Probes) check(bits int) error {
	if p.Codes == 0 || p.PerToken < 1 || p.Tokens < 1 {
		return fail(policy.CodeInvalidArgument, "probes: %d per token, %d tokens at %#x", p.PerToken, p.Tokens, uintptr(p.Codes))
	}
	if err := aligned(8, "probes", p.Codes); err != nil {
		return err
	}
	if n := p.PerToken * p.Tokens * words(bits); n > MaxProbeWords {
		return fail(policy.CodeUnsupported, "%d probe words exceed the %d a device scan holds: run this chunk on the host, or in smaller chunks", n, MaxProbeWords)
	}
	return nil
}

// codeWords is simd.CodeWords.
func codeWords(bits, n int) int {
	if bits < 64 {
		return (n*bits + 63) / 64
	}
	return n * (bits / 64)
}

// scanGrid spreads a scan of items per head over about 8 blocks per SM.
func (v *Device) scanGrid(items, heads int) ([3]int, error) {
	m, err := v.kernels()
	if err != nil {
		return [3]int{}, err
	}
	per := (items + scanThreads - 1) / scanThreads
	limit := max(1, (8*m.sms+heads-1)/heads)
	return [3]int{max(1, min(per, limit)), heads, 1}, nil
}

func (sk Skip) check() error {
	if sk.Count == 0 {
		return nil
	}
	if sk.Slots == 0 || sk.Stride < 0 {
		return fail(policy.CodeInvalidArgument, "skip: %#x with stride %d", uintptr(sk.Slots), sk.Stride)
	}
	return aligned(4, "skip lists", sk.Slots, sk.Count)
}

func (sk Skip) stride() int {
	if sk.Count == 0 {
		return 0
	}
	return sk.Stride
}

// Farthest queues the decode step of the instant score for every head:
// out[h] (device int32) = the slot not in sk whose code has the largest
// summed Hamming distance to the head's probes, ties to the lowest, -1 when
// every slot is skipped (simd Farthest, bit for bit). keys is device
// scratch of Heads uint64.
func (v *Device) Farthest(s Stream, t Tables, p Probes, sk Skip, keys, out Ptr) error {
	if err := t.check(false); err != nil {
		return err
	}
	if err := p.check(t.Bits); err != nil {
		return err
	}
	if keys == 0 || out == 0 {
		return fail(policy.CodeInvalidArgument, "farthest: keys or out is NULL")
	}
	if err := sk.check(); err != nil {
		return err
	}
	if err := aligned(8, "farthest: keys", keys); err != nil {
		return err
	}
	if err := aligned(4, "farthest: out", out); err != nil {
		return err
	}
	if err := v.farthestScan(s, t, p, sk, keys); err != nil {
		return err
	}
	return v.keysToSlots(s, keys, t.Heads, out)
}

// farthestScan is Farthest up to the keys.
func (v *Device) farthestScan(s Stream, t Tables, p Probes, sk Skip, keys Ptr) error {
	items := t.Slots
	if t.Bits < 64 {
		items = codeWords(t.Bits, t.Slots)
	}
	grid, err := v.scanGrid(items, t.Heads)
	if err != nil {
		return err
	}
	if err := v.Fill32(s, keys, 0, 2*t.Heads); err != nil {
		return err
	}
	a := new(args).ptr(t.Codes).i64(t.Stride).i32(t.Bits).i32(t.Slots).
		ptr(p.Codes).i64(p.HeadStride).i64(p.TokenStride).i32(p.PerToken).i32(p.Tokens).
		ptr(sk.Slots).i32(sk.stride()).ptr(sk.Count).ptr(keys)
	return v.launch(s, kFarthest, grid, scanThreads, 0, a)
}

func (v *Device) keysToSlots(s Stream, keys Ptr, heads int, out Ptr) error {
	a := new(args).ptr(keys).i32(heads).ptr(out).i32(1)
	return v.launch(s, kKeysToSlots, [3]int{(heads + scanThreads - 1) / scanThreads, 1, 1}, scanThreads, 0, a)
}

// ScoreStep queues the step of the accumulated or decayed score (mode, as
// policy.Score): every slot's score and count are updated from its
// distance to the probes (inv = 1/float32(p.Tokens)), then, when out is not
// 0, out[h] gets the slot of largest updated score not in sk, ties to the
// lowest (simd ScoreStep). With out = 0 it is token mode's update of every
// slot (simd Hamming then Update); keys may then be 0 too. The instant
// score works too (scores are then just the step distances).
func (v *Device) ScoreStep(s Stream, t Tables, p Probes, sk Skip, mode policy.Score, decay float32, keys, out Ptr) error {
	if err := t.check(true); err != nil {
		return err
	}
	if err := p.check(t.Bits); err != nil {
		return err
	}
	if mode < policy.ScoreInstant || mode > policy.ScoreDecayed {
		return fail(policy.CodeInvalidArgument, "score mode %d", mode)
	}
	if err := sk.check(); err != nil {
		return err
	}
	argmax := 0
	if out != 0 {
		if keys == 0 {
			return fail(policy.CodeInvalidArgument, "score step: keys is NULL")
		}
		if err := aligned(8, "score step: keys", keys); err != nil {
			return err
		}
		if err := aligned(4, "score step: out", out); err != nil {
			return err
		}
		argmax = 1
		if err := v.Fill32(s, keys, 0, 2*t.Heads); err != nil {
			return err
		}
	}
	grid, err := v.scanGrid(t.Slots, t.Heads)
	if err != nil {
		return err
	}
	inv := 1 / float32(p.Tokens)
	keep := 1 - decay
	a := new(args).ptr(t.Codes).i64(t.Stride).i32(t.Bits).i32(t.Slots).
		ptr(p.Codes).i64(p.HeadStride).i64(p.TokenStride).i32(p.PerToken).i32(p.Tokens).
		ptr(sk.Slots).i32(sk.stride()).ptr(sk.Count).
		ptr(t.Score).ptr(t.Count).i64(t.ScoreStride).i32(int(mode)).f32(inv).f32(decay).f32(keep).i32(argmax).ptr(keys)
	if err := v.launch(s, kScoreStep, grid, scanThreads, 0, a); err != nil {
		return err
	}
	if out == 0 {
		return nil
	}
	return v.keysToSlots(s, keys, t.Heads, out)
}

// NewCodes locates the new tokens' key codes (hev_hash's output of k,
// [token][kv head][words]): head h, token t at Codes + h*HeadStride +
// t*TokenStride words.
type NewCodes struct {
	Codes       Ptr
	HeadStride  int64
	TokenStride int64
}

// Placement says where Store puts a token and what it reports.
type Placement struct {
	// Token is the token of the step (its code, and the step's probes for
	// its score).
	Token int
	// FixedSlot, when >= 0, is the slot in every head (a free slot);
	// otherwise Victims[h*VictimStride] (device int32, written by Farthest
	// or ScoreStep; -1 leaves the head alone) is head h's slot.
	FixedSlot    int
	Victims      Ptr
	VictimStride int
	// OutSlots (device int32 per head, or 0) receives each head's slot:
	// what a GPU runtime's cache write (for llama.cpp, ggml_set_rows' row
	// indices) reads in stream order, without a host sync.
	OutSlots Ptr
	// Positions (device int32, head h's slots at h*PositionStride, -1 for
	// a free slot; or 0) is the device's record of each slot's position:
	// the slot's old position goes to OutEvicted[h] (device int32, or 0)
	// and Position takes its place.
	Positions      Ptr
	PositionStride int64
	Position       int32
	OutEvicted     Ptr
	// Guard (device int32, GuardWords per head; or 0) is each head's
	// record of its protected slots, which Guard turns into skip lists;
	// Sinks and Recent are the engine's n_sink and n_recent.
	Guard  Ptr
	Sinks  int
	Recent int
}

// GuardWords is the int32 count of one head's guard: the sink slots, a
// ring of the last Recent slots stored, and two counters.
func GuardWords(sinks, recent int) int { return 2 + sinks + recent }

// NewGuards returns the initial guards of heads heads (nothing stored), to
// be uploaded once per sequence.
func NewGuards(heads, sinks, recent int) []int32 {
	g := make([]int32, heads*GuardWords(sinks, recent))
	for h := 0; h < heads; h++ {
		b := g[h*GuardWords(sinks, recent):]
		for i := 2; i < GuardWords(sinks, recent); i++ {
			b[i] = -1
		}
	}
	return g
}

// Guard queues the construction of each head's skip list for a step whose
// evictable positions are below hi (hi = max(t - n_recent, n_sink), t the
// step's newest position), from the guards Store kept and the device's
// positions: sk.Slots + h*(sinks+recent) receives the list, ascending,
// sk.Count[h] its length (sk.Stride must be sinks+recent). It is
// policy's table.skip on the device: an asynchronous decode step needs
// nothing from the host but t.
func (v *Device) Guard(s Stream, guard Ptr, sinks, recent, heads int, positions Ptr, positionStride int64, hi int32, sk Skip) error {
	if guard == 0 || positions == 0 || sk.Slots == 0 || sk.Count == 0 || sinks < 0 || recent < 0 || heads < 1 {
		return fail(policy.CodeInvalidArgument, "guard: %d heads, sinks %d, recent %d, buffers %#x %#x %#x %#x", heads, sinks, recent, uintptr(guard), uintptr(positions), uintptr(sk.Slots), uintptr(sk.Count))
	}
	if sk.Stride != sinks+recent {
		return fail(policy.CodeShape, "guard: skip stride %d, want n_sink + n_recent = %d", sk.Stride, sinks+recent)
	}
	if err := aligned(4, "guard: a buffer", guard, positions, sk.Slots, sk.Count); err != nil {
		return err
	}
	a := new(args).ptr(guard).i32(sinks).i32(recent).ptr(positions).i64(positionStride).i32(int(hi)).i32(heads).ptr(sk.Slots).ptr(sk.Count)
	return v.launch(s, kGuard, [3]int{(heads + scanThreads - 1) / scanThreads, 1, 1}, scanThreads, 0, a)
}

// Store queues the placement of one token of the step in every head: its
// key code goes into its slot (see Placement), its score becomes its own
// step distance to the probes, its count 1 (docs/algorithm.md, step 6).
func (v *Device) Store(s Stream, t Tables, p Probes, nc NewCodes, pl Placement) error {
	if err := t.check(true); err != nil {
		return err
	}
	if err := p.check(t.Bits); err != nil {
		return err
	}
	if nc.Codes == 0 || pl.Token < 0 || pl.Token >= p.Tokens || pl.FixedSlot >= t.Slots || (pl.FixedSlot < 0 && pl.Victims == 0) {
		return fail(policy.CodeInvalidArgument, "store: token %d of %d, slot %d of %d, victims at %#x", pl.Token, p.Tokens, pl.FixedSlot, t.Slots, uintptr(pl.Victims))
	}
	if pl.Positions != 0 && pl.PositionStride < int64(t.Slots) && t.Heads > 1 {
		return fail(policy.CodeShape, "store: position stride %d is below %d slots", pl.PositionStride, t.Slots)
	}
	if pl.Guard != 0 && (pl.Sinks < 0 || pl.Recent < 0) {
		return fail(policy.CodeInvalidArgument, "store: guard with n_sink %d, n_recent %d", pl.Sinks, pl.Recent)
	}
	if err := aligned(8, "store: the new codes", nc.Codes); err != nil {
		return err
	}
	if err := aligned(4, "store: the slots, positions or guards", pl.Victims, pl.OutSlots, pl.Positions, pl.OutEvicted, pl.Guard); err != nil {
		return err
	}
	inv := 1 / float32(p.Tokens)
	a := new(args).ptr(t.Codes).i64(t.Stride).i32(t.Bits).
		ptr(p.Codes).i64(p.HeadStride).i64(p.TokenStride).i32(p.PerToken).i32(p.Tokens).
		ptr(t.Score).ptr(t.Count).i64(t.ScoreStride).f32(inv).
		ptr(nc.Codes).i64(nc.HeadStride).i64(nc.TokenStride).i32(pl.Token).i32(pl.FixedSlot).ptr(pl.Victims).i32(pl.VictimStride).ptr(pl.OutSlots).
		ptr(pl.Positions).i64(pl.PositionStride).i32(int(pl.Position)).ptr(pl.OutEvicted).
		ptr(pl.Guard).i32(pl.Sinks).i32(pl.Recent)
	return v.launch(s, kStore, [3]int{t.Heads, 1, 1}, 32, 0, a)
}

// TokenTotals queues token mode's aggregation: totals[i] (device float64)
// = the float64 sum of scores[k][i] over k < tables, in order, where
// scores is a device array of tables device pointers to float32 arrays of
// at least slots entries (layer-major, KV head minor, as the CPU sums).
func (v *Device) TokenTotals(s Stream, scores Ptr, tables, slots int, totals Ptr) error {
	if scores == 0 || totals == 0 || tables < 1 || slots < 1 {
		return fail(policy.CodeInvalidArgument, "token totals: %d tables of %d slots", tables, slots)
	}
	if err := aligned(8, "token totals: the table list or the totals", scores, totals); err != nil {
		return err
	}
	grid, err := v.scanGrid(slots, 1)
	if err != nil {
		return err
	}
	a := new(args).ptr(scores).i32(tables).i32(slots).ptr(totals)
	return v.launch(s, kTokenTotals, grid, scanThreads, 0, a)
}

// ReadAll queues a kernel that reads bytes (a multiple of 16) at p and
// writes nothing: the device's read bandwidth, for benchmarks. sink is
// device scratch of one uint64.
func (v *Device) ReadAll(s Stream, p Ptr, bytes int64, sink Ptr) error {
	if p == 0 || sink == 0 || bytes < 16 || bytes%16 != 0 {
		return fail(policy.CodeInvalidArgument, "read: %d bytes", bytes)
	}
	if err := aligned(16, "read", p); err != nil {
		return err
	}
	if err := aligned(8, "read: sink", sink); err != nil {
		return err
	}
	grid, err := v.scanGrid(int(min(bytes/16, 1<<30)), 1)
	if err != nil {
		return err
	}
	a := new(args).ptr(p).i64(bytes / 16).u64(0x9e3779b97f4a7c15).ptr(sink)
	return v.launch(s, kReadBW, grid, scanThreads, 0, a)
}
