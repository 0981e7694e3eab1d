package bench

// The amd64 kernels are generated with avo from the separate module in _gen.
//go:generate sh -c "cd ../_gen && go run . -pkg bench -out ../bench/kernels_amd64.s -stubs ../bench/kernels_stub_amd64.go"
