//go:build linux

package policy

import (
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
)

// readPhysicalMemory is the least of the machine's memory, the limits of
// the process's memory cgroups (a container sees the host's MemTotal but may
// only use its limit) and the process's address-space limit (RLIMIT_AS,
// `ulimit -v`), past which the Go runtime aborts just the same.
func readPhysicalMemory() uint64 {
	total := physicalFrom("/")
	if total == 0 {
		// /proc hidden (some sandboxes): the kernel still answers sysinfo.
		var si syscall.Sysinfo_t
		if syscall.Sysinfo(&si) == nil {
			total = uint64(si.Totalram) * uint64(si.Unit)
		}
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_AS, &rl) == nil && rl.Cur != ^uint64(0) && rl.Cur != 0 && (total == 0 || rl.Cur < total) {
		total = rl.Cur
	}
	return total
}

// physicalFrom reads the figures under the file system root `root` (a
// directory holding proc/ and sys/; tests pass a made-up one): /proc/meminfo's
// MemTotal, lowered to the smallest memory limit on the way from the
// process's cgroup up to the root of each hierarchy, cgroup v2
// (memory.max) and v1 (memory.limit_in_bytes). 0 when MemTotal is unreadable
// and no limit is set.
func physicalFrom(root string) uint64 {
	total := memTotal(path.Join(root, "proc/meminfo"))
	lower := func(v uint64) {
		if v != 0 && (total == 0 || v < total) {
			total = v
		}
	}
	data, err := os.ReadFile(path.Join(root, "proc/self/cgroup"))
	if err != nil {
		return total
	}
	for _, line := range strings.Split(string(data), "\n") {
		// hierarchy-id:controllers:path; v2 is "0::path".
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			for _, mnt := range []string{"sys/fs/cgroup", "sys/fs/cgroup/unified"} {
				lower(cgroupLimit(path.Join(root, mnt), f[2], "memory.max"))
			}
		case hasController(f[1], "memory"):
			lower(cgroupLimit(path.Join(root, "sys/fs/cgroup/memory"), f[2], "memory.limit_in_bytes"))
		}
	}
	return total
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// cgroupLimit is the smallest limit in file `name` from mount/cg up to
// mount, 0 if none: a parent's limit binds its children too. Inside a
// container the cgroup's own path may be absent (the mount is its root);
// the walk then reads the root's.
func cgroupLimit(mount, cg, name string) uint64 {
	var best uint64
	for dir := path.Clean("/" + cg); ; dir = path.Dir(dir) {
		if b, err := os.ReadFile(path.Join(mount, dir, name)); err == nil {
			// "max" (v2) or a huge page-rounded number (v1) mean no limit;
			// the v1 figure is lowered to MemTotal by the caller.
			if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v != 0 && (best == 0 || v < best) {
				best = v
			}
		}
		if dir == "/" {
			return best
		}
	}
}

func memTotal(file string) uint64 {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				if v, err := strconv.ParseUint(f[0], 10, 64); err == nil {
					return satMul(v, 1024)
				}
			}
		}
	}
	return 0
}
