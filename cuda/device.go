package cuda

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/hashevict/hashevict/policy"
)

// Ptr is a device address (CUdeviceptr).
type Ptr uintptr

// Stream is a CUstream of the device's context; 0 is the context's legacy
// default stream.
type Stream uintptr

// The special stream handles of cuda.h, valid in every context.
const (
	StreamLegacy    Stream = 1
	StreamPerThread Stream = 2
)

// Device is one CUDA context with the kernels loaded into it. Every method
// pins the calling goroutine to its OS thread and makes the context current
// for the duration of its driver calls (a context is current per thread),
// restoring the caller's context afterwards. Methods are safe for
// concurrent use; kernel launches are serialised per Device.
type Device struct {
	d        *driver
	ctx      uintptr
	ordinal  int32
	primary  bool // the context is the device's primary one, retained by Open
	Name     string
	CCMajor  int
	CCMinor  int
	bytes    atomic.Int64 // device memory allocated through Alloc and not freed
	mu       sync.Mutex   // kernel launches share one parameter block
	mod      *module
	modErr   error
	loadOnce sync.Once
}

var (
	devMu   sync.Mutex
	devices = map[uintptr]*Device{} // by context
)

// Open returns the Device of the context current on the calling OS thread,
// or, when none is current, of the primary context of device 0 (which the
// runtime API and PyTorch use too).
func Open() (*Device, error) {
	d, err := load()
	if err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var ctx uintptr
	if r := d.call(d.cuCtxGetCurrent, uintptr(unsafe.Pointer(&ctx))); r != resSuccess {
		return nil, d.err(r, "cuCtxGetCurrent")
	}
	if ctx != 0 {
		return deviceFor(d, ctx, false)
	}
	return openPrimary(d, 0)
}

// openPrimary retains device ordinal's primary context.
func openPrimary(d *driver, ordinal int32) (*Device, error) {
	var dev int32
	if r := d.call(d.cuDeviceGet, uintptr(unsafe.Pointer(&dev)), uintptr(ordinal)); r != resSuccess {
		return nil, d.err(r, "cuDeviceGet")
	}
	var ctx uintptr
	if r := d.call(d.cuDevicePrimaryCtxRetain, uintptr(unsafe.Pointer(&ctx)), uintptr(dev)); r != resSuccess {
		return nil, d.err(r, "cuDevicePrimaryCtxRetain")
	}
	v, err := deviceFor(d, ctx, true)
	if err != nil || !v.primary {
		// Already known (or failed): keep one retain per Device.
		d.call(d.cuDevicePrimaryCtxRelease, uintptr(dev))
	}
	return v, err
}

// deviceFor returns the Device of ctx, creating it on first use.
func deviceFor(d *driver, ctx uintptr, primary bool) (*Device, error) {
	devMu.Lock()
	defer devMu.Unlock()
	if v := devices[ctx]; v != nil {
		return v, nil
	}
	v := &Device{d: d, ctx: ctx, primary: primary}
	if r := d.call(d.cuCtxPushCurrent, ctx); r != resSuccess {
		return nil, d.err(r, "cuCtxPushCurrent")
	}
	err := v.describe()
	var old uintptr
	d.call(d.cuCtxPopCurrent, uintptr(unsafe.Pointer(&old)))
	if err != nil {
		return nil, err
	}
	devices[ctx] = v
	return v, nil
}

// describe reads the device's name and compute capability (context current).
func (v *Device) describe() error {
	d := v.d
	if r := d.call(d.cuCtxGetDevice, uintptr(unsafe.Pointer(&v.ordinal))); r != resSuccess {
		return d.err(r, "cuCtxGetDevice")
	}
	var major, minor int32
	if r := d.call(d.cuDeviceGetAttribute, uintptr(unsafe.Pointer(&major)), 75, uintptr(v.ordinal)); r != resSuccess {
		return d.err(r, "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)")
	}
	if r := d.call(d.cuDeviceGetAttribute, uintptr(unsafe.Pointer(&minor)), 76, uintptr(v.ordinal)); r != resSuccess {
		return d.err(r, "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)")
	}
	v.CCMajor, v.CCMinor = int(major), int(minor)
	var name [256]byte
	if r := d.call(d.cuDeviceGetName, uintptr(unsafe.Pointer(&name[0])), uintptr(len(name)-1), uintptr(v.ordinal)); r == resSuccess {
		n := 0
		for n < len(name) && name[n] != 0 {
			n++
		}
		v.Name = string(name[:n])
	}
	return nil
}

// enter pins the goroutine and makes v's context current; the returned
// function undoes both. Every driver call of a Device runs between them.
func (v *Device) enter() (func(), error) {
	runtime.LockOSThread()
	if r := v.d.call(v.d.cuCtxPushCurrent, v.ctx); r != resSuccess {
		runtime.UnlockOSThread()
		return nil, v.d.err(r, "cuCtxPushCurrent")
	}
	return func() {
		var old uintptr
		v.d.call(v.d.cuCtxPopCurrent, uintptr(unsafe.Pointer(&old)))
		runtime.UnlockOSThread()
	}, nil
}

// Memory types of CU_POINTER_ATTRIBUTE_MEMORY_TYPE.
const (
	memHost    = 1
	memDevice  = 2
	memArray   = 3
	memUnified = 4
)

// Pointer attributes (CUpointer_attribute).
const (
	attrContext       = 1
	attrMemoryType    = 2
	attrDeviceOrdinal = 9
)

// ForPointer returns the Device whose context owns device memory p (a
// tensor's data pointer). A host pointer, pinned or not, is refused: the
// caller marked host memory as CUDA.
func ForPointer(p Ptr) (*Device, error) {
	d, err := load()
	if err != nil {
		return nil, err
	}
	if p == 0 {
		return nil, fail(policy.CodeInvalidArgument, "a CUDA tensor has a NULL data pointer")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var mt uint32
	if r := d.call(d.cuPointerGetAttribute, uintptr(unsafe.Pointer(&mt)), attrMemoryType, uintptr(p)); r != resSuccess {
		if r == resInvalidValue {
			return nil, fail(policy.CodeInvalidArgument, "pointer %#x is marked as CUDA device memory but the driver does not know it (host memory, or freed): pass host tensors with device HOST", uintptr(p))
		}
		return nil, d.err(r, "cuPointerGetAttribute(MEMORY_TYPE)")
	}
	switch mt {
	case memDevice, memUnified:
	case memHost:
		return nil, fail(policy.CodeInvalidArgument, "pointer %#x is page-locked host memory, not device memory: pass it with device HOST", uintptr(p))
	default:
		return nil, fail(policy.CodeInvalidArgument, "pointer %#x has CUDA memory type %d (an array?), not linear device memory", uintptr(p), mt)
	}
	var ctx uintptr
	if r := d.call(d.cuPointerGetAttribute, uintptr(unsafe.Pointer(&ctx)), attrContext, uintptr(p)); r != resSuccess {
		return nil, d.err(r, "cuPointerGetAttribute(CONTEXT)")
	}
	if ctx != 0 {
		return deviceFor(d, ctx, false)
	}
	// Memory from stream-ordered pools carries no context; it belongs to
	// its device, whose primary context the runtime API uses.
	var ord int32
	if r := d.call(d.cuPointerGetAttribute, uintptr(unsafe.Pointer(&ord)), attrDeviceOrdinal, uintptr(p)); r != resSuccess {
		return nil, d.err(r, "cuPointerGetAttribute(DEVICE_ORDINAL)")
	}
	return openPrimary(d, ord)
}

// IsDeviceOnly reports whether p is device memory the host cannot read or
// write (not host, pinned or managed memory): an argument the API reads or
// writes on the host must not be, or the host process would fault. False
// when no driver is loaded or the driver does not know p.
func IsDeviceOnly(p Ptr) bool {
	d, err := load()
	if err != nil || p == 0 {
		return false
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var mt uint32
	return d.call(d.cuPointerGetAttribute, uintptr(unsafe.Pointer(&mt)), attrMemoryType, uintptr(p)) == resSuccess && mt == memDevice
}

// CheckPointer verifies that p is device memory of v's context.
func (v *Device) CheckPointer(p Ptr, what string) error {
	o, err := ForPointer(p)
	if err != nil {
		return fail(policy.CodeOf(err), "%s: %s", what, trimPrefix(err))
	}
	if o != v {
		return fail(policy.CodeInvalidArgument, "%s (%#x) belongs to CUDA context %#x (device %d), not %#x (device %d): all tensors of one call must share a context", what, uintptr(p), o.ctx, o.ordinal, v.ctx, v.ordinal)
	}
	return nil
}

// CheckStream verifies that s can order work of v's context: the special
// handles always can, another stream only when it was created in v's
// context.
func (v *Device) CheckStream(s Stream) error {
	if s == 0 || s == StreamLegacy || s == StreamPerThread {
		return nil
	}
	exit, err := v.enter()
	if err != nil {
		return err
	}
	defer exit()
	var ctx uintptr
	if r := v.d.call(v.d.cuStreamGetCtx, uintptr(s), uintptr(unsafe.Pointer(&ctx))); r != resSuccess {
		if r == resInvalidHandle || r == resInvalidValue || r == resInvalidContext {
			return fail(policy.CodeInvalidArgument, "stream %#x is not a valid CUDA stream (%s)", uintptr(s), firstName(v.d, r))
		}
		return v.d.err(r, "cuStreamGetCtx")
	}
	if ctx != v.ctx {
		return fail(policy.CodeInvalidArgument, "stream %#x belongs to CUDA context %#x, but the tensor's memory to context %#x: pass a stream of the tensor's context", uintptr(s), ctx, v.ctx)
	}
	return nil
}

func firstName(d *driver, r uintptr) string {
	n, _ := d.resultName(r)
	return n
}

func trimPrefix(err error) string {
	s := err.Error()
	if len(s) > 6 && s[:6] == "cuda: " {
		return s[6:]
	}
	return s
}

// Allocated returns the bytes of device memory allocated through Alloc and
// not yet freed (what a memory cap counts).
func (v *Device) Allocated() int64 { return v.bytes.Load() }

// Alloc allocates bytes of device memory in v's context.
func (v *Device) Alloc(bytes int64) (Ptr, error) {
	if bytes <= 0 {
		return 0, fail(policy.CodeInvalidArgument, "allocation of %d bytes", bytes)
	}
	exit, err := v.enter()
	if err != nil {
		return 0, err
	}
	defer exit()
	var p uintptr
	if r := v.d.call(v.d.cuMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(bytes)); r != resSuccess {
		return 0, v.d.err(r, "cuMemAlloc("+itoa(int(bytes))+" bytes)")
	}
	v.bytes.Add(bytes)
	return Ptr(p), nil
}

// Free releases memory of bytes bytes from Alloc. Freeing 0 does nothing;
// a context already destroyed (process teardown) is not an error.
func (v *Device) Free(p Ptr, bytes int64) error {
	if p == 0 {
		return nil
	}
	exit, err := v.enter()
	if err != nil {
		return err
	}
	defer exit()
	r := v.d.call(v.d.cuMemFree, uintptr(p))
	if r != resSuccess && r != resContextDestroyed && r != resDeinitialized {
		return v.d.err(r, "cuMemFree")
	}
	v.bytes.Add(-bytes)
	return nil
}

// Upload copies src to device memory dst in stream order and waits for
// the copy (src is Go memory, which must not be read after return).
func (v *Device) Upload(s Stream, dst Ptr, src unsafe.Pointer, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	exit, err := v.enter()
	if err != nil {
		return err
	}
	defer exit()
	if r := v.d.call(v.d.cuMemcpyHtoDAsync, uintptr(dst), uintptr(src), uintptr(bytes), uintptr(s)); r != resSuccess {
		return v.d.err(r, "cuMemcpyHtoDAsync")
	}
	return v.syncLocked(s)
}

// Download copies device memory src to dst after the work queued on s,
// and waits for it.
func (v *Device) Download(s Stream, dst unsafe.Pointer, src Ptr, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	exit, err := v.enter()
	if err != nil {
		return err
	}
	defer exit()
	if r := v.d.call(v.d.cuMemcpyDtoHAsync, uintptr(dst), uintptr(src), uintptr(bytes), uintptr(s)); r != resSuccess {
		return v.d.err(r, "cuMemcpyDtoHAsync")
	}
	return v.syncLocked(s)
}

// CopyAsync copies device memory in stream order without waiting.
func (v *Device) CopyAsync(s Stream, dst, src Ptr, bytes int64) error {
	exit, err := v.enter()
	if err != nil {
		return err
	}
	defer exit()
	if r := v.d.call(v.d.cuMemcpyDtoDAsync, uintptr(dst), uintptr(src), uintptr(bytes), uintptr(s)); r != resSuccess {
		return v.d.err(r, "cuMemcpyDtoDAsync")
	}
	return nil
}

// Fill32 sets count 32-bit words at dst to value, in stream order.
func (v *Device) Fill32(s Stream, dst Ptr, value uint32, count int) error {
	exit, err := v.enter()
	if err != nil {
		return err
	}
	defer exit()
	if r := v.d.call(v.d.cuMemsetD32Async, uintptr(dst), uintptr(value), uintptr(count), uintptr(s)); r != resSuccess {
		return v.d.err(r, "cuMemsetD32Async")
	}
	return nil
}

// Sync waits for the work queued on s.
func (v *Device) Sync(s Stream) error {
	exit, err := v.enter()
	if err != nil {
		return err
	}
	defer exit()
	return v.syncLocked(s)
}

func (v *Device) syncLocked(s Stream) error {
	if r := v.d.call(v.d.cuStreamSynchronize, uintptr(s)); r != resSuccess {
		return v.d.err(r, "cuStreamSynchronize")
	}
	return nil
}

// NewStream creates a stream in v's context (tests and benchmarks; a
// runtime passes its own).
func (v *Device) NewStream() (Stream, error) {
	exit, err := v.enter()
	if err != nil {
		return 0, err
	}
	defer exit()
	var s uintptr
	if r := v.d.call(v.d.cuStreamCreate, uintptr(unsafe.Pointer(&s)), 1 /* CU_STREAM_NON_BLOCKING */); r != resSuccess {
		return 0, v.d.err(r, "cuStreamCreate")
	}
	return Stream(s), nil
}

// DestroyStream destroys a stream from NewStream.
func (v *Device) DestroyStream(s Stream) error {
	exit, err := v.enter()
	if err != nil {
		return err
	}
	defer exit()
	if r := v.d.call(v.d.cuStreamDestroy, uintptr(s)); r != resSuccess {
		return v.d.err(r, "cuStreamDestroy")
	}
	return nil
}

// DriverVersion returns the driver's CUDA version, e.g. "13.0".
func (v *Device) DriverVersion() string { return v.d.versionString() }

// Pending reports whether work queued on s has not finished yet.
func (v *Device) Pending(s Stream) (bool, error) {
	exit, err := v.enter()
	if err != nil {
		return false, err
	}
	defer exit()
	switch r := v.d.call(v.d.cuStreamQuery, uintptr(s)); r {
	case resSuccess:
		return false, nil
	case resNotReady:
		return true, nil
	default:
		return false, v.d.err(r, "cuStreamQuery")
	}
}

// Event is a CUevent, for timing work on a stream.
type Event uintptr

// NewEvent creates an event that records time stamps.
func (v *Device) NewEvent() (Event, error) {
	exit, err := v.enter()
	if err != nil {
		return 0, err
	}
	defer exit()
	var e uintptr
	if r := v.d.call(v.d.cuEventCreate, uintptr(unsafe.Pointer(&e)), 0); r != resSuccess {
		return 0, v.d.err(r, "cuEventCreate")
	}
	return Event(e), nil
}

// Record queues e on s.
func (v *Device) Record(e Event, s Stream) error {
	exit, err := v.enter()
	if err != nil {
		return err
	}
	defer exit()
	if r := v.d.call(v.d.cuEventRecord, uintptr(e), uintptr(s)); r != resSuccess {
		return v.d.err(r, "cuEventRecord")
	}
	return nil
}

// Elapsed waits for b and returns the milliseconds between a and b.
func (v *Device) Elapsed(a, b Event) (float32, error) {
	exit, err := v.enter()
	if err != nil {
		return 0, err
	}
	defer exit()
	if r := v.d.call(v.d.cuEventSynchronize, uintptr(b)); r != resSuccess {
		return 0, v.d.err(r, "cuEventSynchronize")
	}
	var ms float32
	if r := v.d.call(v.d.cuEventElapsedTime, uintptr(unsafe.Pointer(&ms)), uintptr(a), uintptr(b)); r != resSuccess {
		return 0, v.d.err(r, "cuEventElapsedTime")
	}
	return ms, nil
}

// DestroyEvent destroys an event from NewEvent.
func (v *Device) DestroyEvent(e Event) error {
	exit, err := v.enter()
	if err != nil {
		return err
	}
	defer exit()
	if r := v.d.call(v.d.cuEventDestroy, uintptr(e)); r != resSuccess {
		return v.d.err(r, "cuEventDestroy")
	}
	return nil
}

// MemInfo returns the free and total device memory of v's device.
func (v *Device) MemInfo() (free, total int64, err error) {
	exit, err := v.enter()
	if err != nil {
		return 0, 0, err
	}
	defer exit()
	var f, t uintptr
	if r := v.d.call(v.d.cuMemGetInfo, uintptr(unsafe.Pointer(&f)), uintptr(unsafe.Pointer(&t))); r != resSuccess {
		return 0, 0, v.d.err(r, "cuMemGetInfo")
	}
	return int64(f), int64(t), nil
}
