// Package collective owns fmtrain's gradient communication: the Communicator
// interface (all-reduce, broadcast, all-gather, barrier), the TCP ring that
// implements it on CPUs, the long-lived per-worker Endpoint that forms a new
// ring for every generation, and the BucketReducer that all-reduces gradient
// buckets in the background while backward still runs. The NCCL communicator
// for GPU buffers lives in collective/nccl and implements the same interface.
//
// A worker drives the package like this:
//
//	ep, err := collective.Listen(ctx, "10.0.0.5:0")    // once per process
//	register(ep.Addr())                                   // advertised to the coordinator
//	for assignment := range assignments {                 // one per generation
//		comm, err := ep.Join(ctx, assignment.Rendezvous, collective.Options{})
//		br, err := collective.NewBucketReducer(comm, model.Grads(), collective.BucketOptions{})
//		model.SetGradReadyHook(br.Ready)
//		for step := ... {
//			model.Backward(ctx, dOut)       // calls br.Ready(lo, hi) as grads become final
//			err := br.Wait(ctx)                 // all buckets reduced; resets for the next step
//			if errors.Is(err, collective.ErrPeerLost) {
//				break                       // generation over: report, wait for the next one
//			}
//			optimizer.Step(...)
//		}
//		br.Close(); comm.Close()
//	}
//	ep.Close()
//
// # Failure contract
//
// Every operation returns by its deadline (Options.Timeout, default 60 s, or
// the context's deadline if sooner). When a peer closes, resets or stops
// answering, every rank's operation returns an error that wraps ErrPeerLost
// and names the lost peer (see PeerLostError). After any error the
// communicator is unusable: every later call returns the same error, the
// contents of the buffer passed to the failed call are undefined, and the
// caller must Close it and Join a new generation.
//
// # Wire format
//
// Ranks form a ring: rank r dials rank r+1 and accepts rank r−1. A dialer
// sends a hello carrying the job id, the generation, its rank and the world
// size; the acceptor refuses a hello whose job or generation differs from the
// Join it is serving. After the handshake the forward direction of each
// connection carries raw little-endian float32 data with no framing (both
// sides know the schedule); the otherwise idle reverse direction carries
// abort notices, so that one detected failure reaches every rank at once.
package collective
