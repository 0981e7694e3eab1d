package simd

// The amd64 kernels are generated with avo from the separate module in
// _gen (so that avo is not a dependency of this module):
//go:generate sh -c "cd ../_gen && go run . -pkg simd -out ../simd/kernels_amd64.s -stubs ../simd/kernels_stub_amd64.go"
