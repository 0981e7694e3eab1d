package cuda

import (
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"unsafe"

	"github.com/hashevict/hashevict/policy"
)

var emu struct {
	once sync.Once
	path string
	err  string
}

// buildEmu builds testdata/emu_libcuda.cpp (a libcuda that runs the
// kernels on the host) once per test binary.
func buildEmu(t *testing.T) string {
	t.Helper()
	emu.once.Do(func() {
		cxx, err := exec.LookPath("c++")
		if err != nil {
			emu.err = "SKIPPED: no C++ compiler (c++): the emulated driver cannot be built"
			return
		}
		dir, err := filepathAbs(t)
		if err != nil {
			emu.err = err.Error()
			return
		}
		emu.path = filepath.Join(dir, "libcuda-emu.so")
		if b, err := exec.Command(cxx, "-shared", "-fPIC", "-O2", "-ffp-contract=off", "-Wall", "-Werror", "-o", emu.path, "testdata/emu_libcuda.cpp").CombinedOutput(); err != nil {
			emu.err = "building the emulator: " + err.Error() + "\n" + string(b)
		}
	})
	if emu.err != "" {
		if emu.err[:8] == "SKIPPED:" {
			t.Skip(emu.err)
		}
		t.Fatal(emu.err)
	}
	return emu.path
}

// TestDecodeStepMatchesEngine drives Layer.DecodeStep on the host-emulated
// driver and Engine.Place on the CPU with the same rows, for every width,
// probe and score: every head's slot and evicted position agree at every
// step, from an empty cache through evictions.
func TestDecodeStepMatchesEngine(t *testing.T) {
	useLibrary(t, buildEmu(t))
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 10))
	steps := 120
	if testing.Short() {
		steps = 60
	}
	i := 0
	for _, bits := range []int{8, 16, 32, 64, 128, 256} {
		for _, probe := range []policy.Probe{policy.ProbeQuery, policy.ProbeKey} {
			for _, score := range []policy.Score{policy.ScoreInstant, policy.ScoreAccumulated, policy.ScoreDecayed} {
				i++
				kvh, g, dim := 1+i%3, 1+i%4, []int{1, 17, 64, 100}[i%4]
				dt := []policy.DType{policy.F32, policy.F16, policy.BF16}[i%3]
				p := policy.DefaultParams()
				p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Bits, p.Budget = 2, kvh, kvh*g, dim, bits, 20+i%7
				p.Probe, p.Score, p.Seed = probe, score, uint64(i)
				e, err := policy.NewEngine(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := e.AddSeq(0); err != nil {
					t.Fatal(err)
				}
				decodeCase(t, v, r, e, dt, steps)
			}
		}
	}
}

func decodeCase(t *testing.T, v *Device, r *rand.Rand, e *policy.Engine, dt policy.DType, steps int) {
	t.Helper()
	p := e.P
	sp := StepParams{Probe: p.Probe, Score: p.Score, Decay: p.Decay}
	es := int(dt.Size())
	qBytes, kBytes := int64(p.QHeads*p.HeadDim*es), int64(p.KVHeads*p.HeadDim*es)
	dq, err := v.Alloc(qBytes)
	if err != nil {
		t.Fatal(err)
	}
	dk, _ := v.Alloc(kBytes)
	outs, _ := v.Alloc(int64(8 * p.KVHeads))
	sc, err := v.NewScratch(p.KVHeads, p.QHeads, p.Bits, p.Sinks, p.Recent)
	if err != nil {
		t.Fatal(err)
	}
	layers := make([]*Layer, p.Layers)
	rts := make([]Ptr, p.Layers)
	for l := range layers {
		if layers[l], err = v.NewLayer(0, p.KVHeads, p.Bits, p.Budget, p.Sinks, p.Recent); err != nil {
			t.Fatal(err)
		}
		if want := LayerBytes(p.KVHeads, p.Bits, p.Budget, p.Sinks, p.Recent); layers[l].Bytes() != want {
			t.Fatalf("layer holds %d bytes, LayerBytes says %d", layers[l].Bytes(), want)
		}
		rt, _ := e.ProjectionOf(l)
		rts[l], _ = v.Alloc(int64(4 * len(rt)))
		v.Upload(0, rts[l], unsafe.Pointer(&rt[0]), int64(4*len(rt)))
	}
	before := v.Allocated()
	defer func() {
		for l := range layers {
			layers[l].Free()
			v.Free(rts[l], int64(4*p.Bits*p.HeadDim))
		}
		sc.Free(v)
		v.Free(dq, qBytes)
		v.Free(dk, kBytes)
		v.Free(outs, int64(8*p.KVHeads))
	}()
	q, k := make([]byte, qBytes), make([]byte, kBytes)
	for step := 0; step < steps; step++ {
		randomRow(r, dt, q, p.QHeads*p.HeadDim)
		randomRow(r, dt, k, p.KVHeads*p.HeadDim)
		v.Upload(0, dq, unsafe.Pointer(&q[0]), qBytes)
		v.Upload(0, dk, unsafe.Pointer(&k[0]), kBytes)
		qr := policy.Rows{Data: q, DType: dt, Dim: p.HeadDim, Heads: p.QHeads, Tokens: 1, HeadStride: int64(p.HeadDim * es), TokenStride: qBytes}
		kr := policy.Rows{Data: k, DType: dt, Dim: p.HeadDim, Heads: p.KVHeads, Tokens: 1, HeadStride: int64(p.HeadDim * es), TokenStride: kBytes}
		dqr := Rows{Data: dq, DType: dt, Dim: p.HeadDim, Heads: p.QHeads, Tokens: 1, HeadStride: int64(p.HeadDim * es), TokenStride: qBytes}
		dkr := Rows{Data: dk, DType: dt, Dim: p.HeadDim, Heads: p.KVHeads, Tokens: 1, HeadStride: int64(p.HeadDim * es), TokenStride: kBytes}
		for l := range layers {
			want := make([]int32, 2*p.KVHeads)
			if err := e.Place(0, l, &qr, &kr, []int32{int32(step)}, want[:p.KVHeads], want[p.KVHeads:]); err != nil {
				t.Fatal(err)
			}
			if err := layers[l].DecodeStep(0, &dqr, &dkr, rts[l], int32(step), sp, sc, outs, outs+Ptr(4*p.KVHeads)); err != nil {
				t.Fatal(err)
			}
			got := make([]int32, 2*p.KVHeads)
			v.Download(0, unsafe.Pointer(&got[0]), outs, int64(4*len(got)))
			for h := range want {
				if got[h] != want[h] {
					t.Fatalf("%d-bit, probe %d, score %d, %s: step %d layer %d: device slots/evicted %v, engine %v", p.Bits, p.Probe, p.Score, dt, step, l, got, want)
				}
			}
		}
	}
	if v.Allocated() != before {
		t.Errorf("decode steps allocated %d device bytes", v.Allocated()-before)
	}
	// A NaN in k: the engine refuses the step; the device names the row.
	randomRow(r, dt, k, p.KVHeads*p.HeadDim)
	bad := p.KVHeads - 1
	switch dt {
	case policy.F32:
		*(*uint32)(unsafe.Pointer(&k[4*bad*p.HeadDim])) = 0x7fc00000
	default:
		*(*uint16)(unsafe.Pointer(&k[2*bad*p.HeadDim])) = 0xffff
	}
	v.Upload(0, dk, unsafe.Pointer(&k[0]), kBytes)
	dkr := Rows{Data: dk, DType: dt, Dim: p.HeadDim, Heads: p.KVHeads, Tokens: 1, HeadStride: int64(p.HeadDim * es), TokenStride: kBytes}
	dqr := Rows{Data: dq, DType: dt, Dim: p.HeadDim, Heads: p.QHeads, Tokens: 1, HeadStride: int64(p.HeadDim * es), TokenStride: qBytes}
	if err := layers[0].HashStep(0, &dqr, &dkr, rts[0], sp, sc); err != nil {
		t.Fatal(err)
	}
	var badK [1]uint32
	v.Download(0, unsafe.Pointer(&badK[0]), sc.BadK, 4)
	if badK[0] != uint32(bad) {
		t.Errorf("NaN in k head %d: the hash reports row %d", bad, int32(badK[0]))
	}
}
