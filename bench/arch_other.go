//go:build !amd64 || noasm

package bench

// Only the Go loops of bench.go exist here.
