package cuda

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestGPUCheckOnHostEmulation runs the program behind `make gpu-check`
// (cuda/gpucheck) against testdata/emu_libcuda.cpp, a libcuda that runs
// the kernels on the host with the arithmetic of hashevict_math.cuh. Every
// check must pass: the launchers' parameters, the tables' and probes'
// addressing, Store, the token totals and the check program's own
// bookkeeping agree with the CPU engine step by step. (The timings it
// prints are meaningless: the emulated events always say 1 ms.) What only
// a GPU can show — the warp-level code, scheduling, speed — is not
// covered.
func TestGPUCheckOnHostEmulation(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPED in -short: about 20 s")
	}
	emu := buildEmu(t)
	dir := t.TempDir()
	// The go command that runs this test: on PATH, else under GOROOT.
	gocmd, err := exec.LookPath("go")
	if err != nil {
		gocmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "gpucheck")
	if b, err := exec.Command(gocmd, "build", "-o", bin, "./gpucheck").CombinedOutput(); err != nil {
		t.Fatalf("building gpucheck: %v\n%s", err, b)
	}
	cmd := exec.Command(bin, "-quick", "-rounds", "1", "-budgets", "64,256", "-bench-bytes", "1048576", "-delay-bytes", "16")
	cmd.Env = append(os.Environ(), LibraryEnv+"="+emu)
	out, err := cmd.CombinedOutput()
	s := string(out)
	if err != nil || !strings.Contains(s, " 0 failed") || strings.Contains(s, "FAIL") {
		t.Fatalf("gpucheck on the host emulation: %v\n%s", err, s)
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	t.Logf("%s", lines[len(lines)-1])
}
