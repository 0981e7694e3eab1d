package policy

import "fmt"

// Code classifies an error. The values are the pinned HASHEVICT_ERR_* status
// codes of hashevict.h, so the C layer passes them through unchanged.
type Code int32

const (
	CodeInvalidArgument   Code = 1
	CodeInvalidHandle     Code = 2
	CodeOutOfRange        Code = 3
	CodeInvalidParams     Code = 4
	CodeUnsupported       Code = 5
	CodeShape             Code = 6
	CodeNonFinite         Code = 7
	CodeUnknownSequence   Code = 8
	CodeSequenceExists    Code = 9
	CodeChunkTooLarge     Code = 10
	CodeBufferTooSmall    Code = 11
	CodeMemoryCap         Code = 12
	CodePosition          Code = 13
	CodeWrongMode         Code = 14
	CodeCorruptState      Code = 15
	CodeIncompatibleState Code = 16
	CodeInternal          Code = 99
)

// Error is every error the policy package returns.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func errf(code Code, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err, CodeInternal for foreign errors.
func CodeOf(err error) Code {
	if e, ok := err.(*Error); ok {
		return e.Code
	}
	return CodeInternal
}
