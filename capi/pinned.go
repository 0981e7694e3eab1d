package main

/*
#include "hashevict.h"
*/
import "C"

import "github.com/hashevict/hashevict/policy"

// Package policy is pure Go and cannot read the header, so it restates the
// header's pinned numbers, and the C layer passes them through unconverted
// (a policy.Code is returned as the hashevict_status). Each entry below
// indexes a one-element array with the difference of the two spellings of
// one number: when they drift apart the build fails with "index out of
// bounds" or "negative index" on the line that names the pair.
var pinned [1]struct{}

var _ = [...]struct{}{
	pinned[policy.CodeInvalidArgument-C.HASHEVICT_ERR_INVALID_ARGUMENT],
	pinned[policy.CodeInvalidHandle-C.HASHEVICT_ERR_INVALID_HANDLE],
	pinned[policy.CodeOutOfRange-C.HASHEVICT_ERR_OUT_OF_RANGE],
	pinned[policy.CodeInvalidParams-C.HASHEVICT_ERR_INVALID_PARAMS],
	pinned[policy.CodeUnsupported-C.HASHEVICT_ERR_UNSUPPORTED],
	pinned[policy.CodeShape-C.HASHEVICT_ERR_SHAPE],
	pinned[policy.CodeNonFinite-C.HASHEVICT_ERR_NONFINITE],
	pinned[policy.CodeUnknownSequence-C.HASHEVICT_ERR_UNKNOWN_SEQUENCE],
	pinned[policy.CodeSequenceExists-C.HASHEVICT_ERR_SEQUENCE_EXISTS],
	pinned[policy.CodeChunkTooLarge-C.HASHEVICT_ERR_CHUNK_TOO_LARGE],
	pinned[policy.CodeBufferTooSmall-C.HASHEVICT_ERR_BUFFER_TOO_SMALL],
	pinned[policy.CodeMemoryCap-C.HASHEVICT_ERR_MEMORY_CAP],
	pinned[policy.CodePosition-C.HASHEVICT_ERR_POSITION],
	pinned[policy.CodeWrongMode-C.HASHEVICT_ERR_WRONG_MODE],
	pinned[policy.CodeCorruptState-C.HASHEVICT_ERR_CORRUPT_STATE],
	pinned[policy.CodeIncompatibleState-C.HASHEVICT_ERR_INCOMPATIBLE_STATE],
	pinned[policy.CodeInternal-C.HASHEVICT_ERR_INTERNAL],

	pinned[policy.ModeSlot-C.HASHEVICT_MODE_SLOT],
	pinned[policy.ModeToken-C.HASHEVICT_MODE_TOKEN],

	pinned[policy.PolicyHash-C.HASHEVICT_POLICY_HASH],
	pinned[policy.PolicySinkRecent-C.HASHEVICT_POLICY_SINK_RECENT],
	pinned[policy.PolicyKnorm-C.HASHEVICT_POLICY_KNORM],
	pinned[policy.PolicyRandom-C.HASHEVICT_POLICY_RANDOM],
	pinned[policy.PolicyOracle-C.HASHEVICT_POLICY_ORACLE],

	pinned[policy.ProbeQuery-C.HASHEVICT_PROBE_QUERY],
	pinned[policy.ProbeKey-C.HASHEVICT_PROBE_KEY],

	pinned[policy.ScoreInstant-C.HASHEVICT_SCORE_INSTANT],
	pinned[policy.ScoreAccumulated-C.HASHEVICT_SCORE_ACCUMULATED],
	pinned[policy.ScoreDecayed-C.HASHEVICT_SCORE_DECAYED],

	pinned[policy.CompressCosine-C.HASHEVICT_COMPRESS_COSINE],
	pinned[policy.CompressDistance-C.HASHEVICT_COMPRESS_DISTANCE],
	pinned[policy.CompressSoftmax-C.HASHEVICT_COMPRESS_SOFTMAX],
	pinned[policy.CompressLocal-C.HASHEVICT_COMPRESS_LOCAL],
	pinned[policy.CompressTrailing-C.HASHEVICT_COMPRESS_TRAILING],

	pinned[policy.F32-C.HASHEVICT_DTYPE_F32],
	pinned[policy.F16-C.HASHEVICT_DTYPE_F16],
	pinned[policy.BF16-C.HASHEVICT_DTYPE_BF16],
}
