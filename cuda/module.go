package cuda

import (
	_ "embed"
	"encoding/binary"
	"math"
	"os"
	"strings"
	"unsafe"

	"github.com/hashevict/hashevict/policy"
)

// The kernels of kernels/hashevict.cu as build.sh compiles them, in two
// images (toolchain.sh): for CUDA 13 drivers (nvcc 13: SASS sm_80 and sm_90,
// PTX ISA 9.x) and for CUDA 12 drivers (ptxas 12.9: the same kernels, PTX
// ISA 8.0). check-fatbin.sh verifies both against the sources wherever the
// toolchain is installed.
var (
	//go:embed hashevict.fatbin
	fatbin13 []byte
	//go:embed hashevict_cu12.fatbin
	fatbin12 []byte
)

// image is one embedded fatbin and the oldest driver it can load on.
type image struct {
	name      string
	data      []byte
	minDriver int
}

var images = []image{
	{"CUDA 13 image", fatbin13, 13000},
	{"CUDA 12 image", fatbin12, 12000},
}

// retryable results of cuModuleLoadData: another image may load where this
// one cannot (a GPU without SASS here whose PTX the driver cannot JIT).
func retryable(r uintptr) bool {
	switch r {
	case resNoBinaryForGPU, resUnsupportedPTX, resInvalidImage, 218 /* INVALID_PTX */, 221 /* JIT_COMPILER_NOT_FOUND */ :
		return true
	}
	return false
}

// kernelNames are the extern "C" entry points of hashevict.cu.
var kernelNames = [...]string{"hev_hash", "hev_farthest", "hev_score_step", "hev_keys_to_slots", "hev_store", "hev_token_totals", "hev_read_bw", "hev_guard"}

const (
	kHash = iota
	kFarthest
	kScoreStep
	kKeysToSlots
	kStore
	kTokenTotals
	kReadBW
	kGuard
)

// module is the fatbin loaded into one context.
type module struct {
	handle uintptr
	fn     [len(kernelNames)]uintptr
	image  string // which embedded image loaded
	// binary[i] is the architecture of the code the driver chose for
	// kernel i (e.g. 90 for SASS sm_90; JIT-compiled PTX reports the
	// device's own), ptx[i] the PTX version it was built from.
	binary, ptx [len(kernelNames)]int
	// params is page-locked host memory for launch parameters: the
	// driver reads them during cuLaunchKernel, and Go memory holding
	// pointers must not be handed to C.
	params uintptr
	sms    int // streaming multiprocessors, for grid sizes
}

const (
	paramsBytes = 1024
	argsOffset  = 64
	maxArgBytes = paramsBytes - argsOffset
)

// syncLaunches makes every launch wait for its kernel and report its error
// with the kernel's name (HASHEVICT_CUDA_SYNC=1: debugging).
var syncLaunches = os.Getenv("HASHEVICT_CUDA_SYNC") == "1"

// kernels loads the module into v's context on first use.
func (v *Device) kernels() (*module, error) {
	v.loadOnce.Do(func() {
		exit, err := v.enter()
		if err != nil {
			v.modErr = err
			return
		}
		defer exit()
		v.mod, v.modErr = v.loadModule()
	})
	return v.mod, v.modErr
}

func (v *Device) loadModule() (*module, error) {
	d := v.d
	m := &module{}
	where := "on " + v.Name + ", sm_" + itoa(v.CCMajor) + itoa(v.CCMinor)
	if d.version < 12000 {
		return nil, fail(policy.CodeUnsupported, "the driver supports CUDA %s; the kernels need a driver for CUDA 12.0 (R525) or later (%s)", d.versionString(), where)
	}
	var errs []string
	for _, im := range images {
		if d.version < im.minDriver {
			continue
		}
		r := d.call(d.cuModuleLoadData, uintptr(unsafe.Pointer(&m.handle)), uintptr(unsafe.Pointer(&im.data[0])))
		if r == resSuccess {
			m.image = im.name
			break
		}
		err := d.err(r, "cuModuleLoadData (the embedded "+im.name+", "+where+")")
		if !retryable(r) {
			return nil, err
		}
		errs = append(errs, trimPrefix(err))
	}
	if m.image == "" {
		return nil, fail(policy.CodeUnsupported, "no embedded image loads: %s", strings.Join(errs, "; "))
	}
	for i, name := range kernelNames {
		cname := append([]byte(name), 0)
		if r := d.call(d.cuModuleGetFunction, uintptr(unsafe.Pointer(&m.fn[i])), m.handle, uintptr(unsafe.Pointer(&cname[0]))); r != resSuccess {
			d.call(d.cuModuleUnload, m.handle)
			return nil, d.err(r, "cuModuleGetFunction("+name+")")
		}
		var b, p int32
		d.call(d.cuFuncGetAttribute, uintptr(unsafe.Pointer(&b)), 6 /* BINARY_VERSION */, m.fn[i])
		d.call(d.cuFuncGetAttribute, uintptr(unsafe.Pointer(&p)), 5 /* PTX_VERSION */, m.fn[i])
		m.binary[i], m.ptx[i] = int(b), int(p)
	}
	var sms int32
	if r := d.call(d.cuDeviceGetAttribute, uintptr(unsafe.Pointer(&sms)), 16 /* MULTIPROCESSOR_COUNT */, uintptr(v.ordinal)); r != resSuccess || sms < 1 {
		sms = 1
	}
	m.sms = int(sms)
	if r := d.call(d.cuMemAllocHost, uintptr(unsafe.Pointer(&m.params)), paramsBytes); r != resSuccess {
		d.call(d.cuModuleUnload, m.handle)
		return nil, d.err(r, "cuMemAllocHost (launch parameters)")
	}
	return m, nil
}

// Code describes which code the driver runs, e.g. "sm_90 SASS (PTX 9.x
// not used)" or "JIT from PTX".
func (v *Device) Code() (string, error) {
	m, err := v.kernels()
	if err != nil {
		return "", err
	}
	b := m.binary[kFarthest]
	s := m.image + ", binary version " + itoa(b/10) + "." + itoa(b%10) + ", PTX " + itoa(m.ptx[kFarthest]/10) + "." + itoa(m.ptx[kFarthest]%10)
	if b == 80 || b == 90 {
		s += " (embedded SASS sm_" + itoa(b) + ")"
	} else {
		s += " (JIT-compiled from the embedded compute_90 PTX)"
	}
	return s, nil
}

// args packs kernel parameters with the alignment of their C types, the
// layout cuLaunchKernel's parameter buffer must have.
type args struct {
	b [maxArgBytes]byte
	n int
}

func (a *args) put(v uint64, size int) *args {
	a.n = (a.n + size - 1) &^ (size - 1)
	if size == 8 {
		binary.LittleEndian.PutUint64(a.b[a.n:], v)
	} else {
		binary.LittleEndian.PutUint32(a.b[a.n:], uint32(v))
	}
	a.n += size
	return a
}

func (a *args) ptr(p Ptr) *args     { return a.put(uint64(p), 8) }
func (a *args) i64(v int64) *args   { return a.put(uint64(v), 8) }
func (a *args) u64(v uint64) *args  { return a.put(v, 8) }
func (a *args) i32(v int) *args     { return a.put(uint64(uint32(int32(v))), 4) }
func (a *args) f32(v float32) *args { return a.put(uint64(math.Float32bits(v)), 4) }

// launch queues kernel k on stream s with the given grid, block, dynamic
// shared memory and parameters. The caller holds neither v.mu nor the
// context.
func (v *Device) launch(s Stream, k int, grid [3]int, block, smem int, a *args) error {
	m, err := v.kernels()
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	exit, err := v.enter()
	if err != nil {
		return err
	}
	defer exit()
	// The parameter block: cuLaunchKernel's `extra` list
	// {BUFFER_POINTER, args, BUFFER_SIZE, &size, END}, the size, the args.
	base := m.params
	words := unsafe.Slice((*uint64)(*(*unsafe.Pointer)(unsafe.Pointer(&base))), argsOffset/8)
	words[0], words[1] = 1, uint64(base+argsOffset)
	words[2], words[3] = 2, uint64(base+5*8)
	words[4], words[5] = 0, uint64((a.n+7)&^7)
	dst := unsafe.Slice((*byte)(unsafe.Add(*(*unsafe.Pointer)(unsafe.Pointer(&base)), argsOffset)), maxArgBytes)
	copy(dst, a.b[:a.n])
	r := v.d.call(v.d.cuLaunchKernel, m.fn[k], uintptr(grid[0]), uintptr(grid[1]), uintptr(grid[2]),
		uintptr(block), 1, 1, uintptr(smem), uintptr(s), 0, base)
	if r != resSuccess {
		return v.d.err(r, "cuLaunchKernel("+kernelNames[k]+")")
	}
	if syncLaunches {
		if r := v.d.call(v.d.cuStreamSynchronize, uintptr(s)); r != resSuccess {
			return v.d.err(r, kernelNames[k]+" (HASHEVICT_CUDA_SYNC)")
		}
	}
	return nil
}

// checkBits refuses a code width the engine does not support.
func checkBits(bits int) error {
	switch bits {
	case 8, 16, 32, 64, 128, 256:
		return nil
	}
	return fail(policy.CodeInvalidArgument, "code width %d bits: want 8, 16, 32, 64, 128 or 256", bits)
}

// words is the number of 64-bit words of one wide code.
func words(bits int) int {
	if bits <= 64 {
		return 1
	}
	return bits / 64
}
