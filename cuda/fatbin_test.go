package cuda

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFatbinSum: the embedded fatbin and the kernel sources are the ones
// fatbin.sum records, so a kernel edited without `bash cuda/build.sh` fails
// here, without nvcc.
func TestFatbinSum(t *testing.T) {
	sum, err := os.ReadFile("fatbin.sum")
	if err != nil {
		t.Fatal(err)
	}
	where := map[string]string{"hashevict.cu": "kernels/hashevict.cu", "hashevict_math.cuh": "kernels/hashevict_math.cuh"}
	sc := bufio.NewScanner(bytes.NewReader(sum))
	seen := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || f[0] == "nvcc" || f[0] == "ptxas12" {
			continue
		}
		path := f[1]
		if p, ok := where[path]; ok {
			path = p
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if (path == "hashevict.fatbin" && !bytes.Equal(b, fatbin13)) || (path == "hashevict_cu12.fatbin" && !bytes.Equal(b, fatbin12)) {
			t.Errorf("the embedded image is not %s", path)
		}
		h := sha256.Sum256(b)
		if hex.EncodeToString(h[:]) != f[0] {
			t.Errorf("%s changed since the fatbin was built: run bash cuda/build.sh (needs nvcc)", path)
		}
		seen++
	}
	if seen != 6 {
		t.Errorf("fatbin.sum lists %d files, want 6", seen)
	}
}

// TestFatbinRebuild runs check-fatbin.sh where nvcc is installed: the
// fatbin rebuilt from the sources is byte-identical, the PTX holds no
// fused multiply-add, ptxas spills nothing (both images).
func TestFatbinRebuild(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPED in -short: rebuilding the fatbin takes ~20 s")
	}
	nvcc := os.Getenv("NVCC")
	if nvcc == "" {
		m, _ := filepath.Glob("../.cache/cuda-toolchain/lib/python3*/site-packages/nvidia/cu13/bin/nvcc")
		if len(m) == 0 {
			t.Skip("SKIPPED: nvcc is not installed (bash cuda/build.sh installs it into .cache/): the fatbins were NOT rebuilt and compared; TestFatbinSum checked their recorded hashes")
		}
	}
	out, err := exec.Command("bash", "check-fatbin.sh").CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatal(err)
	}
}
