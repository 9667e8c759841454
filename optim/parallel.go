package optim

import (
	"runtime"
	"sync"
)

// chunk is the unit of parallel work over flat buffers. It is fixed, not
// derived from the core count, so reductions sum in the same order on every
// machine (results never depend on GOMAXPROCS).
const chunk = 1 << 15

// forChunks calls f(lo, hi) for consecutive chunks of [0, n), spread over
// the available cores; small buffers run on the caller's goroutine.
func forChunks(n int, f func(i, lo, hi int)) {
	chunks := (n + chunk - 1) / chunk
	workers := min(runtime.GOMAXPROCS(0), chunks)
	if workers <= 1 {
		for i := 0; i < chunks; i++ {
			f(i, i*chunk, min(n, (i+1)*chunk))
		}
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= chunks {
					return
				}
				f(i, i*chunk, min(n, (i+1)*chunk))
			}
		}()
	}
	wg.Wait()
}
