package cuda

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/hashevict/hashevict/policy"
)

// useLibrary makes the next driver load try only path, as a process
// started with HASHEVICT_LIBCUDA=path would.
func useLibrary(t *testing.T, path string) {
	t.Helper()
	t.Setenv(LibraryEnv, path)
	loadOnce = sync.Once{}
	loaded, loadErr = nil, nil
	devMu.Lock()
	devices = map[uintptr]*Device{}
	devMu.Unlock()
	t.Cleanup(func() {
		loadOnce = sync.Once{}
		loaded, loadErr = nil, nil
		devices = map[uintptr]*Device{}
	})
}

// buildStub compiles testdata/stub_libcuda.c into a shared library (once
// per flavour and test binary).
var stubs sync.Map

func buildStub(t *testing.T, flags ...string) string {
	t.Helper()
	key := strings.Join(flags, " ")
	if p, ok := stubs.Load(key); ok {
		return p.(string)
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("SKIPPED: no C compiler (cc): the stub-driver tests need one")
	}
	dir, err := filepathAbs(t)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "libcuda-stub"+strings.ReplaceAll(key, " ", "")+".so")
	args := append([]string{"-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", out, "testdata/stub_libcuda.c"}, flags...)
	if b, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("building the stub driver: %v\n%s", err, b)
	}
	stubs.Store(key, out)
	return out
}

var stubDir struct {
	once sync.Once
	dir  string
	err  error
}

// filepathAbs is a directory for the stubs that outlives each test (the
// libraries stay loaded in the process after a test ends).
func filepathAbs(t *testing.T) (string, error) {
	stubDir.once.Do(func() {
		stubDir.dir, stubDir.err = filepath.Abs(filepath.Join(os.TempDir(), "hashevict-cuda-stubs-"+itoa(os.Getpid())))
		if stubDir.err == nil {
			stubDir.err = os.MkdirAll(stubDir.dir, 0o755)
		}
	})
	return stubDir.dir, stubDir.err
}

// stub is the fake driver of testdata/stub_libcuda.c, opened for its
// control functions.
type stub struct {
	t                *testing.T
	set, last, field uintptr
}

func openStub(t *testing.T) *stub {
	t.Helper()
	path := buildStub(t)
	useLibrary(t, path)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		t.Fatal(err)
	}
	s := &stub{t: t}
	for _, f := range []struct {
		name string
		addr *uintptr
	}{{"hev_stub_set", &s.set}, {"hev_stub_last", &s.last}, {"hev_stub_field", &s.field}} {
		if *f.addr, err = purego.Dlsym(h, f.name); err != nil {
			t.Fatal(err)
		}
	}
	// The defaults: a working fake GPU.
	for k, v := range []int64{0, 1, 2, 0x1000, 0, 0, 0, 0x1000, 13000, 0} {
		s.setKey(k, v)
	}
	return s
}

const (
	kInit = iota
	kCount
	kMemType
	kStreamCtx
	kModLoad
	kCurCtx
	kAlloc
	kPtrCtx
	kVersion
	kModLoad2
)

func (s *stub) setKey(k int, v int64) {
	purego.SyscallN(s.set, uintptr(k), uintptr(v))
}

// lastLaunch returns the kernel index and decoded parameters of the last
// cuLaunchKernel.
func (s *stub) lastLaunch() (fn int, params []uint64, grid [3]uint32, block, smem uint32) {
	var fn32 int32
	var sizeOK int32
	purego.SyscallN(s.last, uintptr(unsafe.Pointer(&fn32)), uintptr(unsafe.Pointer(&grid[0])),
		uintptr(unsafe.Pointer(&block)), uintptr(unsafe.Pointer(&smem)), uintptr(unsafe.Pointer(&sizeOK)))
	if sizeOK == 0 {
		s.t.Errorf("launch of kernel %d: the parameter buffer's size is not the C layout's", fn32)
	}
	for i := 0; ; i++ {
		var v uint64
		r, _, _ := purego.SyscallN(s.field, uintptr(i), uintptr(unsafe.Pointer(&v)))
		if int32(r) == 0 {
			break
		}
		params = append(params, v)
	}
	return int(fn32), params, grid, block, smem
}

func wantErr(t *testing.T, err error, code policy.Code, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want code %d with %q", code, parts)
	}
	if _, ok := err.(*policy.Error); !ok {
		t.Fatalf("error %T (%v) is not a *policy.Error", err, err)
	}
	if got := policy.CodeOf(err); got != code {
		t.Errorf("code %d, want %d: %v", got, code, err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

func TestMissingLibrary(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "libcuda.so.1")
	useLibrary(t, missing)
	wantErr(t, Available(), policy.CodeUnsupported, "no CUDA driver library", missing)
	_, err := Open()
	wantErr(t, err, policy.CodeUnsupported, missing)
	_, err = ForPointer(0x1000)
	wantErr(t, err, policy.CodeUnsupported, missing)
	// The failure is remembered, not retried per call, and stays an error.
	wantErr(t, Available(), policy.CodeUnsupported, missing)
}

func TestLibraryWithoutSymbols(t *testing.T) {
	useLibrary(t, buildStub(t, "-DHEV_STUB_PARTIAL"))
	wantErr(t, Available(), policy.CodeUnsupported, "has no cuDriverGetVersion")
}

func TestStubDriver(t *testing.T) {
	for _, c := range []struct {
		init  int64
		count int64
		code  policy.Code
		parts []string
	}{
		{34, 1, policy.CodeUnsupported, []string{"cuInit failed", "CUDA_ERROR_STUB_LIBRARY (34)", "stub", "driver 13.0"}},
		{100, 1, policy.CodeUnsupported, []string{"CUDA_ERROR_NO_DEVICE (100)", "no CUDA-capable device"}},
		{0, 0, policy.CodeUnsupported, []string{"sees no CUDA device"}},
		{999, 1, policy.CodeInternal, []string{"CUresult 999"}},
	} {
		s := openStub(t)
		s.setKey(kInit, c.init)
		s.setKey(kCount, c.count)
		wantErr(t, Available(), c.code, c.parts...)
		_, err := Open()
		wantErr(t, err, c.code, c.parts...)
	}
}

func TestFakeDevice(t *testing.T) {
	s := openStub(t)
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	if v.Name != "Fake GPU" || v.CCMajor != 9 || v.CCMinor != 0 || v.DriverVersion() != "13.0" {
		t.Errorf("device %q sm_%d%d driver %s", v.Name, v.CCMajor, v.CCMinor, v.DriverVersion())
	}
	if w, err := ForPointer(0x7f0000001000); err != nil || w != v {
		t.Errorf("ForPointer of the primary context's memory: %v %v, want the opened device", w, err)
	}
	s.setKey(kMemType, 1)
	_, err = ForPointer(0x1234)
	wantErr(t, err, policy.CodeInvalidArgument, "page-locked host memory", "HOST")
	s.setKey(kMemType, 0)
	_, err = ForPointer(0x1234)
	wantErr(t, err, policy.CodeInvalidArgument, "does not know it")
	wantErr(t, v.CheckPointer(0x1234, "k"), policy.CodeInvalidArgument, "k:", "does not know it")
	s.setKey(kMemType, 2)
	s.setKey(kPtrCtx, 0x5000)
	wantErr(t, v.CheckPointer(0x1234, "q"), policy.CodeInvalidArgument, "q (0x1234) belongs to CUDA context 0x5000")
	s.setKey(kPtrCtx, 0x1000)
	if err := v.CheckPointer(0x1234, "q"); err != nil {
		t.Error(err)
	}
	_, err = ForPointer(0)
	wantErr(t, err, policy.CodeInvalidArgument, "NULL")

	for _, st := range []Stream{0, StreamLegacy, StreamPerThread} {
		if err := v.CheckStream(st); err != nil {
			t.Errorf("stream %#x: %v", st, err)
		}
	}
	s.setKey(kStreamCtx, 0x2000)
	wantErr(t, v.CheckStream(0x77), policy.CodeInvalidArgument, "stream 0x77 belongs to CUDA context 0x2000")
	s.setKey(kStreamCtx, 0x1000)
	if err := v.CheckStream(0x77); err != nil {
		t.Error(err)
	}

	p, err := v.Alloc(1000)
	if err != nil || v.Allocated() != 1000 {
		t.Fatalf("alloc: %v, %d bytes counted", err, v.Allocated())
	}
	if err := v.Free(p, 1000); err != nil || v.Allocated() != 0 {
		t.Errorf("free: %v, %d bytes counted", err, v.Allocated())
	}
	s.setKey(kAlloc, 2)
	_, err = v.Alloc(1 << 40)
	wantErr(t, err, policy.CodeMemoryCap, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory")
	if v.Allocated() != 0 {
		t.Errorf("a failed allocation counted %d bytes", v.Allocated())
	}
	_, err = v.Alloc(0)
	wantErr(t, err, policy.CodeInvalidArgument)
}

func TestNoKernelImage(t *testing.T) {
	s := openStub(t)
	s.setKey(kModLoad, 209)
	s.setKey(kModLoad2, 209)
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	tb := Tables{Codes: 0x7f0000000000, Bits: 16, Slots: 100, Heads: 2, Stride: 25}
	pr := Probes{Codes: 0x7f0000100000, HeadStride: 1, TokenStride: 2, PerToken: 1, Tokens: 1}
	err = v.Farthest(0, tb, pr, Skip{}, 0x7f0000200000, 0x7f0000300000)
	wantErr(t, err, policy.CodeUnsupported, "no embedded image loads", "CUDA 13 image", "CUDA 12 image", "CUDA_ERROR_NO_BINARY_FOR_GPU (209)", "sm_80", "Fake GPU")
	// The failed load is remembered: later calls get the same error.
	_, err = v.Code()
	wantErr(t, err, policy.CodeUnsupported, "209")
}

// TestImageChoice: a CUDA 13 driver that cannot JIT the CUDA 13 image's
// PTX falls back to the CUDA 12 image; a CUDA 12 driver only tries that
// one; an older driver is refused by name.
func TestImageChoice(t *testing.T) {
	for _, c := range []struct {
		version, first, second int64
		image, err             string
	}{
		{13000, 0, 0, "CUDA 13 image", ""},
		{13000, 222, 0, "CUDA 12 image", ""},
		{12020, 0, 0, "CUDA 12 image", ""},
		{12020, 222, 0, "", "CUDA_ERROR_UNSUPPORTED_PTX_VERSION (222)"},
		{13000, 2, 0, "", "CUDA_ERROR_OUT_OF_MEMORY"},
		{11080, 0, 0, "", "supports CUDA 11.8; the kernels need a driver for CUDA 12.0 (R525) or later"},
	} {
		s := openStub(t)
		s.setKey(kVersion, c.version)
		s.setKey(kModLoad, c.first)
		s.setKey(kModLoad2, c.second)
		v, err := Open()
		if err != nil {
			t.Fatal(err)
		}
		code, err := v.Code()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("driver %d, loads %d then %d: %v, want an error with %q", c.version, c.first, c.second, err, c.err)
			}
			continue
		}
		if err != nil || !strings.HasPrefix(code, c.image) {
			t.Errorf("driver %d, loads %d then %d: %q, %v; want the %s", c.version, c.first, c.second, code, err, c.image)
		}
	}
}

// TestLaunchParameters checks, against the C layout of every kernel's
// parameter list, that the launchers pack their arguments in order, with
// the right sizes and alignment.
func TestLaunchParameters(t *testing.T) {
	s := openStub(t)
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	const (
		codes, rt, probes, skip, skipN, keys, out, score, count, nc, slots, outSlots = 0xA000, 0xA100, 0xA200, 0xA300, 0xA400, 0xA500, 0xA600, 0xA700, 0xA800, 0xA900, 0xAA00, 0xAB00
	)
	f32 := func(f float32) uint64 { return uint64(math.Float32bits(f)) }
	check := func(what string, wantFn int, want []uint64) {
		t.Helper()
		fn, got, _, _, _ := s.lastLaunch()
		if fn != wantFn {
			t.Fatalf("%s launched kernel %d, want %d", what, fn, wantFn)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d parameters, want %d", what, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s parameter %d = %#x, want %#x", what, i, got[i], want[i])
			}
		}
	}
	x := Rows{Data: 0xB000, DType: policy.BF16, Dim: 100, Heads: 3, Tokens: 5, HeadStride: 200, TokenStride: 600}
	if err := v.Hash(0, x, rt, 32, codes, out); err != nil {
		t.Fatal(err)
	}
	check("Hash", kHash, []uint64{0xB000, 2, 100, 3, 15, 200, 600, rt, 32, codes, out})
	if _, _, grid, block, smem := s.lastLaunch(); grid != [3]uint32{15, 1, 1} || block != 256 || smem != 400 {
		t.Errorf("Hash launch grid %v block %d smem %d", grid, block, smem)
	}

	tb := Tables{Codes: codes, Stride: 1000, Bits: 16, Slots: 4000, Heads: 8, Score: score, Count: count, ScoreStride: 4096}
	pr := Probes{Codes: probes, HeadStride: 4, TokenStride: 32, PerToken: 4, Tokens: 1}
	sk := Skip{Slots: skip, Stride: 16, Count: skipN}
	if err := v.Farthest(0, tb, pr, sk, keys, out); err != nil {
		t.Fatal(err)
	}
	check("Farthest (its last launch converts the keys)", kKeysToSlots, []uint64{keys, 8, out, 1})
	// The scan itself, launched just before the conversion.
	if err := v.farthestScan(0, tb, pr, sk, keys); err != nil {
		t.Fatal(err)
	}
	check("hev_farthest", kFarthest, []uint64{codes, 1000, 16, 4000, probes, 4, 32, 4, 1, skip, 16, skipN, keys})

	tb.Bits, tb.Stride = 128, 8000
	pr.Tokens = 3
	if err := v.ScoreStep(0, tb, pr, sk, policy.ScoreDecayed, 0.75, keys, 0); err != nil {
		t.Fatal(err)
	}
	check("ScoreStep", kScoreStep, []uint64{codes, 8000, 128, 4000, probes, 4, 32, 4, 3, skip, 16, skipN,
		score, count, 4096, 2, f32(1 / float32(3)), f32(0.75), f32(0.25), 0, keys})

	pl := Placement{Token: 2, FixedSlot: -1, Victims: slots, VictimStride: 1, OutSlots: outSlots,
		Positions: 0xAC00, PositionStride: 4096, Position: 77, OutEvicted: 0xAD00, Guard: 0xAE00, Sinks: 4, Recent: 10}
	if err := v.Store(0, tb, pr, NewCodes{Codes: nc, HeadStride: 2, TokenStride: 16}, pl); err != nil {
		t.Fatal(err)
	}
	check("Store", kStore, []uint64{codes, 8000, 128, probes, 4, 32, 4, 3, score, count, 4096, f32(1 / float32(3)),
		nc, 2, 16, 2, 0xffffffff, slots, 1, outSlots, 0xAC00, 4096, 77, 0xAD00, 0xAE00, 4, 10})
	if err := v.Guard(0, 0xAE00, 4, 10, 8, 0xAC00, 4096, 1234, Skip{Slots: skip, Stride: 14, Count: skipN}); err != nil {
		t.Fatal(err)
	}
	check("Guard", kGuard, []uint64{0xAE00, 4, 10, 0xAC00, 4096, 1234, 8, skip, skipN})

	if err := v.TokenTotals(0, 0xC000, 60, 5000, 0xC100); err != nil {
		t.Fatal(err)
	}
	check("TokenTotals", kTokenTotals, []uint64{0xC000, 60, 5000, 0xC100})
	if err := v.ReadAll(0, 0xD000, 1<<20, 0xD100); err != nil {
		t.Fatal(err)
	}
	check("ReadAll", kReadBW, []uint64{0xD000, 1 << 16, 0x9e3779b97f4a7c15, 0xD100})
}

// TestLaunchRefusesBadSizes: sizes the kernels cannot take are errors
// before any launch.
func TestLaunchRefusesBadSizes(t *testing.T) {
	openStub(t)
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	x := Rows{Data: 0xB000, DType: policy.F32, Dim: 4097, Heads: 1, Tokens: 1, HeadStride: 1 << 15, TokenStride: 1 << 15}
	wantErr(t, v.Hash(0, x, 1, 16, 1, 1), policy.CodeShape, "head_dim 4097")
	x.Dim, x.DType = 8, 7
	wantErr(t, v.Hash(0, x, 1, 16, 1, 1), policy.CodeUnsupported, "dtype 7")
	x.DType = policy.F32
	wantErr(t, v.Hash(0, x, 1, 24, 1, 1), policy.CodeInvalidArgument, "code width 24")
	big := Rows{Data: 0x100, DType: policy.F32, Dim: 8, Heads: 1024, Tokens: 1 << 21, HeadStride: 32, TokenStride: 32 * 1024}
	wantErr(t, v.Hash(0, big, 0x100, 16, 0x100, 0x100), policy.CodeShape, "at most 2^31-1 rows")
	const a = 0x100 // an aligned fake device address
	tb := Tables{Codes: a, Stride: 10, Bits: 16, Slots: 100, Heads: 2}
	pr := Probes{Codes: a, HeadStride: 1, TokenStride: 1, PerToken: 1, Tokens: 2}
	wantErr(t, v.Farthest(0, tb, pr, Skip{}, a, a), policy.CodeShape, "head stride 10")
	tb.Stride = 25
	pr.PerToken = 600
	wantErr(t, v.Farthest(0, tb, pr, Skip{}, a, a), policy.CodeUnsupported, "probe words")
	pr.PerToken = 1
	wantErr(t, v.ScoreStep(0, tb, pr, Skip{}, policy.ScoreAccumulated, 0, a, a), policy.CodeInvalidArgument, "NULL")
	tb.Score, tb.Count, tb.ScoreStride = a, a, 100
	wantErr(t, v.Store(0, tb, pr, NewCodes{Codes: a}, Placement{FixedSlot: 100}), policy.CodeInvalidArgument, "store")
	wantErr(t, v.Store(0, tb, pr, NewCodes{Codes: a}, Placement{FixedSlot: 1, Positions: a, PositionStride: 10}), policy.CodeShape, "position stride 10")
	wantErr(t, v.ScoreStep(0, tb, pr, Skip{}, 3, 0, a, a), policy.CodeInvalidArgument, "score mode 3")
	wantErr(t, v.Guard(0, a, 4, 10, 2, a, 100, 50, Skip{Slots: a, Stride: 10, Count: a}), policy.CodeShape, "skip stride 10")
	wantErr(t, v.Guard(0, 0, 4, 10, 2, a, 100, 50, Skip{Slots: a, Stride: 14, Count: a}), policy.CodeInvalidArgument, "guard")
	// Misaligned pointers never reach a kernel (a misaligned access
	// would poison the caller's whole context).
	x = Rows{Data: a + 2, DType: policy.F32, Dim: 8, Heads: 1, Tokens: 1, HeadStride: 32, TokenStride: 32}
	wantErr(t, v.Hash(0, x, a, 16, a, a), policy.CodeInvalidArgument, "not aligned to 4 bytes")
	x.DType = policy.BF16
	wantErr(t, v.Hash(0, x, a, 16, a+4, a), policy.CodeInvalidArgument, "codes at 0x104 is not aligned to 8")
	tb.Codes = a + 4
	wantErr(t, v.Farthest(0, tb, pr, Skip{}, a, a), policy.CodeInvalidArgument, "not aligned")
	tb.Codes = a
	wantErr(t, v.Farthest(0, tb, pr, Skip{Slots: a + 2, Count: a}, a, a), policy.CodeInvalidArgument, "skip lists")
	wantErr(t, v.Farthest(0, tb, pr, Skip{Count: a}, a, a), policy.CodeInvalidArgument, "skip")
	wantErr(t, v.ScoreStep(0, tb, pr, Skip{}, policy.ScoreDecayed, 0.5, a+4, a), policy.CodeInvalidArgument, "keys")
	wantErr(t, v.Store(0, tb, pr, NewCodes{Codes: a}, Placement{FixedSlot: -1, Victims: a + 1, VictimStride: 1}), policy.CodeInvalidArgument, "slots")
	wantErr(t, v.Store(0, tb, pr, NewCodes{Codes: a}, Placement{FixedSlot: 0, Positions: a, PositionStride: 100, OutEvicted: a + 2}), policy.CodeInvalidArgument, "positions")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if stubDir.dir != "" {
		os.RemoveAll(stubDir.dir)
	}
	os.Exit(code)
}
