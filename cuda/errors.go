package cuda

import (
	"fmt"

	"github.com/hashevict/hashevict/policy"
)

// Every error of this package is a *policy.Error, so that the C layer maps
// it to a status with policy.CodeOf exactly as it maps the host path's
// errors. The codes used:
//
//	CodeUnsupported     no libcuda, no device, the stub driver, a driver too
//	                    old for the embedded code, no kernel image for this GPU
//	CodeInvalidArgument a host pointer marked CUDA, a stream of another
//	                    context, a pointer of another device or context
//	CodeMemoryCap       the device is out of memory
//	CodeShape           sizes the kernels cannot take
//	CodeInternal        any other driver failure (the message names it)
//
// If the policy package ever needs to import this one (the host engine
// calling the device kernels), this file is the only one to change: give
// the package its own error type with the same pinned code values.
func fail(code policy.Code, format string, args ...any) error {
	return &policy.Error{Code: code, Msg: "cuda: " + fmt.Sprintf(format, args...)}
}

// CUresult values this package treats specially (cuda.h).
const (
	resSuccess            = 0
	resInvalidValue       = 1
	resOutOfMemory        = 2
	resNotInitialized     = 3
	resDeinitialized      = 4
	resStubLibrary        = 34
	resInsufficientDriver = 35
	resNoDevice           = 100
	resInvalidDevice      = 101
	resInvalidImage       = 200
	resInvalidContext     = 201
	resNoBinaryForGPU     = 209
	resUnsupportedPTX     = 222
	resInvalidHandle      = 400
	resNotFound           = 500
	resNotReady           = 600
	resContextDestroyed   = 709
)

// resultCode classifies a CUresult of a call that had valid arguments.
func resultCode(r uintptr) policy.Code {
	switch r {
	case resOutOfMemory:
		return policy.CodeMemoryCap
	case resStubLibrary, resInsufficientDriver, resNoDevice, resNoBinaryForGPU, resUnsupportedPTX, resInvalidImage:
		return policy.CodeUnsupported
	case resInvalidValue, resInvalidContext, resInvalidHandle, resInvalidDevice:
		return policy.CodeInvalidArgument
	}
	return policy.CodeInternal
}

// hints explain the results a user can act on.
var hints = map[uintptr]string{
	resStubLibrary:        "this libcuda is the toolkit's stub, not a driver: the real driver (libcuda.so.1 of the NVIDIA driver package) must come first on the library path",
	resInsufficientDriver: "the installed NVIDIA driver is older than this CUDA code needs",
	resNoDevice:           "no CUDA-capable device is visible (check CUDA_VISIBLE_DEVICES and the driver)",
	resNoBinaryForGPU:     "the embedded kernels have no image for this GPU: they carry SASS for sm_80 and sm_90 and PTX for compute_90, so a GPU below sm_80 cannot run them",
	resUnsupportedPTX:     "the driver is too old to JIT-compile the embedded PTX (CUDA 13, ISA 9.x): update the driver to 580 or later",
	resOutOfMemory:        "the device is out of memory",
	resDeinitialized:      "the driver is shutting down",
	resContextDestroyed:   "the CUDA context was destroyed",
}
