package bench

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

const bindEnv = "FMTRAIN_BENCH_TEST_BIND"

// TestBindProcess binds a re-executed copy of the test binary to its last
// usable CPU and checks that every thread, including ones started after the
// binding, runs only there.
func TestBindProcess(t *testing.T) {
	if v := os.Getenv(bindEnv); v != "" {
		cpu, _ := strconv.Atoi(v)
		if err := bindProcess(cpu); err != nil {
			t.Fatal(err)
		}
		check := func(what string) {
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(0, &set); err != nil {
				t.Fatal(err)
			}
			if set.Count() != 1 || !set.IsSet(cpu) {
				t.Errorf("%s: affinity has %d CPUs, want only CPU %d", what, set.Count(), cpu)
			}
		}
		check("binding thread")
		var wg sync.WaitGroup
		for range 8 { // locked goroutines force the runtime to start threads
			wg.Go(func() {
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
				check("thread started after binding")
			})
		}
		wg.Wait()
		return
	}
	cpus := usableCPUs()
	if len(cpus) == 0 {
		t.Fatal("usableCPUs found no CPU")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBindProcess$", "-test.v")
	cmd.Env = append(os.Environ(), bindEnv+"="+strconv.Itoa(cpus[len(cpus)-1]))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bound child: %v\n%s", err, out)
	}
}
