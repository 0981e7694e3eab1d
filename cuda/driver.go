// Package cuda runs the HashEvict kernels on an NVIDIA GPU through the CUDA
// driver API, loaded at run time with purego: nothing here links against
// CUDA, so the library builds, loads and passes its host tests on machines
// without it. The kernels (kernels/*.cu) are compiled ahead of time into a
// fatbin embedded in the package (see build.sh and docs/cuda.md).
//
// The driver is opened lazily, on the first call that needs it, and every
// failure — no libcuda, the toolkit's stub driver, no device, no kernel
// image for the GPU, a host pointer passed as device memory, a stream of
// another context — is an ordinary error (a *policy.Error), never a panic.
package cuda

import (
	"os"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/hashevict/hashevict/policy"
)

// LibraryEnv names an environment variable that, when set, is the only
// path tried for the driver library (tests point it at a missing file or a
// stub; a user can point it at a driver outside the library path).
const LibraryEnv = "HASHEVICT_LIBCUDA"

// defaultLibraries are tried in order: the driver package installs the
// versioned name; the unversioned one exists on development machines.
var defaultLibraries = []string{"libcuda.so.1", "libcuda.so"}

// driver is an opened libcuda: the addresses of the entry points this
// package uses, each looked up before use so that a missing one is an
// error naming it rather than a panic.
type driver struct {
	path    string
	handle  uintptr
	version int // cuDriverGetVersion: 1000*major + 10*minor

	cuInit, cuDriverGetVersion, cuGetErrorName, cuGetErrorString                         uintptr
	cuDeviceGet, cuDeviceGetCount, cuDeviceGetAttribute, cuDeviceGetName                 uintptr
	cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRelease                                  uintptr
	cuCtxGetCurrent, cuCtxGetDevice, cuCtxPushCurrent, cuCtxPopCurrent                   uintptr
	cuCtxSynchronize, cuPointerGetAttribute, cuStreamGetCtx                              uintptr
	cuModuleLoadData, cuModuleUnload, cuModuleGetFunction, cuFuncGetAttribute            uintptr
	cuLaunchKernel, cuMemAlloc, cuMemFree, cuMemAllocHost, cuMemFreeHost                 uintptr
	cuMemcpyHtoDAsync, cuMemcpyDtoHAsync, cuMemcpyDtoDAsync, cuMemsetD32Async            uintptr
	cuStreamSynchronize, cuStreamCreate, cuStreamDestroy, cuMemGetInfo, cuStreamQuery    uintptr
	cuEventCreate, cuEventRecord, cuEventSynchronize, cuEventElapsedTime, cuEventDestroy uintptr
}

// symbols lists every entry point by its ABI name (the _v2 names where
// cuda.h maps the API name onto one).
func (d *driver) symbols() []struct {
	name string
	addr *uintptr
} {
	return []struct {
		name string
		addr *uintptr
	}{
		{"cuInit", &d.cuInit},
		{"cuDriverGetVersion", &d.cuDriverGetVersion},
		{"cuGetErrorName", &d.cuGetErrorName},
		{"cuGetErrorString", &d.cuGetErrorString},
		{"cuDeviceGet", &d.cuDeviceGet},
		{"cuDeviceGetCount", &d.cuDeviceGetCount},
		{"cuDeviceGetAttribute", &d.cuDeviceGetAttribute},
		{"cuDeviceGetName", &d.cuDeviceGetName},
		{"cuDevicePrimaryCtxRetain", &d.cuDevicePrimaryCtxRetain},
		{"cuDevicePrimaryCtxRelease_v2", &d.cuDevicePrimaryCtxRelease},
		{"cuCtxGetCurrent", &d.cuCtxGetCurrent},
		{"cuCtxGetDevice", &d.cuCtxGetDevice},
		{"cuCtxPushCurrent_v2", &d.cuCtxPushCurrent},
		{"cuCtxPopCurrent_v2", &d.cuCtxPopCurrent},
		{"cuCtxSynchronize", &d.cuCtxSynchronize},
		{"cuPointerGetAttribute", &d.cuPointerGetAttribute},
		{"cuStreamGetCtx", &d.cuStreamGetCtx},
		{"cuModuleLoadData", &d.cuModuleLoadData},
		{"cuModuleUnload", &d.cuModuleUnload},
		{"cuModuleGetFunction", &d.cuModuleGetFunction},
		{"cuFuncGetAttribute", &d.cuFuncGetAttribute},
		{"cuLaunchKernel", &d.cuLaunchKernel},
		{"cuMemAlloc_v2", &d.cuMemAlloc},
		{"cuMemFree_v2", &d.cuMemFree},
		{"cuMemAllocHost_v2", &d.cuMemAllocHost},
		{"cuMemFreeHost", &d.cuMemFreeHost},
		{"cuMemcpyHtoDAsync_v2", &d.cuMemcpyHtoDAsync},
		{"cuMemcpyDtoHAsync_v2", &d.cuMemcpyDtoHAsync},
		{"cuMemcpyDtoDAsync_v2", &d.cuMemcpyDtoDAsync},
		{"cuMemsetD32Async", &d.cuMemsetD32Async},
		{"cuStreamSynchronize", &d.cuStreamSynchronize},
		{"cuStreamQuery", &d.cuStreamQuery},
		{"cuStreamCreate", &d.cuStreamCreate},
		{"cuStreamDestroy_v2", &d.cuStreamDestroy},
		{"cuMemGetInfo_v2", &d.cuMemGetInfo},
		{"cuEventCreate", &d.cuEventCreate},
		{"cuEventRecord", &d.cuEventRecord},
		{"cuEventSynchronize", &d.cuEventSynchronize},
		{"cuEventElapsedTime", &d.cuEventElapsedTime},
		{"cuEventDestroy_v2", &d.cuEventDestroy},
	}
}

var (
	loadOnce sync.Once
	loaded   *driver
	loadErr  error
)

// load opens the driver once per process; later calls return the same
// driver or the same error (a missing driver does not appear while a
// process runs, and retrying dlopen on every CUDA tensor would cost).
func load() (*driver, error) {
	loadOnce.Do(func() {
		paths := defaultLibraries
		if p := os.Getenv(LibraryEnv); p != "" {
			paths = []string{p}
		}
		loaded, loadErr = openDriver(paths)
	})
	return loaded, loadErr
}

// Available reports whether a usable driver with at least one device is
// present, and why not otherwise. It opens the driver if that has not
// happened yet.
func Available() error {
	_, err := load()
	return err
}

// openDriver opens the first library of paths that loads, looks up every
// entry point and initialises the driver.
func openDriver(paths []string) (*driver, error) {
	// dlerror is per thread: open and read the error on one thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var tried []string
	d := &driver{}
	for _, p := range paths {
		h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_LOCAL)
		if err == nil {
			d.handle, d.path = h, p
			break
		}
		tried = append(tried, p+": "+err.Error())
	}
	if d.handle == 0 {
		return nil, fail(policy.CodeUnsupported, "no CUDA driver library could be loaded (is the NVIDIA driver installed?); tried %s", strings.Join(tried, "; "))
	}
	for _, s := range d.symbols() {
		a, err := purego.Dlsym(d.handle, s.name)
		if err != nil || a == 0 {
			purego.Dlclose(d.handle)
			return nil, fail(policy.CodeUnsupported, "%s has no %s: not a CUDA driver, or one too old for this library (it needs CUDA 12.0 or later)", d.path, s.name)
		}
		*s.addr = a
	}
	// The version needs no cuInit, and names the driver in every error.
	var v int32
	if r := d.call(d.cuDriverGetVersion, uintptr(unsafe.Pointer(&v))); r == resSuccess {
		d.version = int(v)
	}
	if r := d.call(d.cuInit, 0); r != resSuccess {
		err := d.err(r, "cuInit")
		purego.Dlclose(d.handle)
		return nil, err
	}
	var n int32
	if r := d.call(d.cuDeviceGetCount, uintptr(unsafe.Pointer(&n))); r != resSuccess {
		return nil, d.err(r, "cuDeviceGetCount")
	}
	if n < 1 {
		return nil, fail(policy.CodeUnsupported, "%s loaded but sees no CUDA device: %s", d.path, hints[resNoDevice])
	}
	return d, nil
}

// call invokes a driver entry point and returns its CUresult. Every driver
// entry point takes integers and pointers only, so SyscallN passes them in
// the C calling convention unchanged.
//
//go:uintptrescapes
func (d *driver) call(fn uintptr, args ...uintptr) uintptr {
	r, _, _ := purego.SyscallN(fn, args...)
	return r & 0xffffffff // CUresult is a C enum (int)
}

// err turns a failed CUresult into an error naming the call, the result's
// name and string from the driver, and a hint where one helps.
func (d *driver) err(r uintptr, what string) error {
	name, desc := d.resultName(r)
	msg := what + " failed: " + name
	if desc != "" {
		msg += " (" + desc + ")"
	}
	if h := hints[r]; h != "" {
		msg += ": " + h
	}
	return fail(resultCode(r), "%s [%s, driver %s]", msg, d.path, d.versionString())
}

// resultName asks the driver for the name and description of r; the
// driver's strings are static.
func (d *driver) resultName(r uintptr) (string, string) {
	var name, desc uintptr
	if d.cuGetErrorName != 0 {
		d.call(d.cuGetErrorName, r, uintptr(unsafe.Pointer(&name)))
	}
	if d.cuGetErrorString != 0 {
		d.call(d.cuGetErrorString, r, uintptr(unsafe.Pointer(&desc)))
	}
	n := cString(name)
	if n == "" {
		n = "CUresult " + itoa(int(r))
	} else {
		n += " (" + itoa(int(r)) + ")"
	}
	return n, cString(desc)
}

func (d *driver) versionString() string {
	if d.version == 0 {
		return "version unknown"
	}
	return itoa(d.version/1000) + "." + itoa(d.version%1000/10)
}

// cString copies a NUL-terminated C string (at most 1 KiB: driver strings
// are short, and a bad pointer must not run away).
func cString(p uintptr) string {
	if p == 0 {
		return ""
	}
	base := *(*unsafe.Pointer)(unsafe.Pointer(&p)) // C memory: not moved by Go
	var b []byte
	for i := 0; i < 1024; i++ {
		c := *(*byte)(unsafe.Add(base, i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

func itoa(v int) string {
	if v < 0 {
		return "-" + itoa(-v)
	}
	if v < 10 {
		return string(rune('0' + v))
	}
	return itoa(v/10) + string(rune('0'+v%10))
}
