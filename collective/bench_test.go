package collective

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkAllReduceTCP measures a ring over loopback TCP with every rank in
// this process (fmctl bench allreduce runs one process per rank).
func BenchmarkAllReduceTCP(b *testing.B) {
	for _, n := range []int{2, 4} {
		for _, size := range []int{4 << 10, 64 << 10, 1 << 20, 16 << 20} {
			b.Run(fmt.Sprintf("ranks=%d/bytes=%d", n, size), func(b *testing.B) {
				comms := tcpCluster(b, n, Options{})
				bufs := make([][]float32, n)
				for r := range bufs {
					bufs[r] = make([]float32, size/4)
				}
				b.SetBytes(int64(size))
				b.ResetTimer()
				errs := each(n, func(r int) error {
					for range b.N {
						if err := comms[r].AllReduce(context.Background(), bufs[r], OpSum); err != nil {
							return err
						}
					}
					return nil
				})
				b.StopTimer()
				noErrors(b, errs)
			})
		}
	}
}
