package collective

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Communicator is a group of ranks that reduce and exchange float32 buffers.
//
// A Communicator is used by one goroutine at a time (like a database/sql
// driver Conn): collective calls must be issued in the same order on every
// rank. Rank and Size may be called at any time. Every blocking call takes a
// context and returns by the earlier of its deadline and the communicator's
// per-operation timeout. After any error the communicator is unusable (see
// the package doc); Close is always safe and idempotent.
type Communicator interface {
	// Rank is this process's position in the group, 0 ≤ Rank < Size.
	Rank() int
	// Size is the number of ranks in the group.
	Size() int
	// AllReduce replaces buf on every rank with the element-wise reduction
	// of all ranks' buf. Every rank must pass the same length. Results are
	// bit-identical on all ranks.
	AllReduce(ctx context.Context, buf []float32, op Op) error
	// Broadcast copies root's buf into every other rank's buf.
	Broadcast(ctx context.Context, buf []float32, root int) error
	// AllGather writes rank i's send into recv[i*len(send):(i+1)*len(send)]
	// on every rank; len(recv) must be Size()*len(send).
	AllGather(ctx context.Context, send, recv []float32) error
	// Barrier returns once every rank has entered it.
	Barrier(ctx context.Context) error
	// Close releases the connections and goroutines. Peers still inside an
	// operation see ErrPeerLost naming this rank.
	Close() error
}

// Op is a reduction operator. The zero value is invalid.
type Op int

const (
	// OpSum adds the ranks' values.
	OpSum Op = 1 + iota
	// OpAverage adds the ranks' values and divides by the world size, the
	// gradient averaging of PyTorch DDP and Horovod.
	OpAverage
)

// String returns "sum" or "average".
func (o Op) String() string {
	switch o {
	case OpSum:
		return "sum"
	case OpAverage:
		return "average"
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Rendezvous is what the coordinator hands each rank for one generation:
// who it is and where everybody listens.
type Rendezvous struct {
	// JobID names the job; a peer from another job is refused.
	JobID string
	// Generation increases each time the job's group is re-formed; a peer
	// from another generation is refused.
	Generation uint64
	// Rank is this process's rank, 0 ≤ Rank < WorldSize.
	Rank int
	// WorldSize is the number of ranks, 1..MaxWorldSize.
	WorldSize int
	// Addrs holds every rank's Endpoint address (Endpoint.Addr), in rank order.
	Addrs []string
}

// MaxWorldSize bounds Rendezvous.WorldSize. The ring works for any size; the
// bound only catches corrupted assignments.
const MaxWorldSize = 4096

// Validate reports the first field that is out of range.
func (rv Rendezvous) Validate() error {
	switch {
	case rv.JobID == "":
		return errors.New("collective: rendezvous job id is empty")
	case rv.WorldSize < 1 || rv.WorldSize > MaxWorldSize:
		return fmt.Errorf("collective: rendezvous world size %d is outside 1..%d", rv.WorldSize, MaxWorldSize)
	case rv.Rank < 0 || rv.Rank >= rv.WorldSize:
		return fmt.Errorf("collective: rendezvous rank %d is outside 0..%d", rv.Rank, rv.WorldSize-1)
	case len(rv.Addrs) != rv.WorldSize:
		return fmt.Errorf("collective: rendezvous has %d addrs for world size %d", len(rv.Addrs), rv.WorldSize)
	}
	for i, a := range rv.Addrs {
		if a == "" {
			return fmt.Errorf("collective: rendezvous addr of rank %d is empty", i)
		}
	}
	return nil
}

// Defaults for Options' zero fields.
const (
	DefaultTimeout     = 60 * time.Second
	DefaultJoinTimeout = 60 * time.Second
	DefaultChunkBytes  = 1 << 20
	MinChunkBytes      = 4 << 10
	MaxChunkBytes      = 64 << 20
	DefaultSpinWait    = 5 * time.Millisecond
)

// Options tune a Communicator. The zero value works.
type Options struct {
	// Timeout bounds every operation (default DefaultTimeout). A peer that
	// stops answering makes the operation fail after at most this long.
	Timeout time.Duration
	// JoinTimeout bounds Join: connecting to the next rank and accepting the
	// previous one (default DefaultJoinTimeout).
	JoinTimeout time.Duration
	// ChunkBytes is the pipelining unit of the ring (default 1 MiB, between
	// MinChunkBytes and MaxChunkBytes): while one chunk is on the wire the
	// previous one is being reduced and the next one is being sent onwards.
	ChunkBytes int
	// SpinWait is how long an operation polls its sockets, yielding the CPU
	// between polls, before it sleeps in the kernel; negative never polls.
	// Polling saves a wake-up per ring step, which is most of a small
	// message's latency, but the CPU it takes is taken from whatever else
	// could run. Zero polls for DefaultSpinWait where that CPU would
	// otherwise idle or go to another rank of the ring: when this host's
	// ranks of the ring times GOMAXPROCS (the threads their compute uses)
	// fit in its CPUs, or always for a Dedicated process. Linux TCP only.
	SpinWait time.Duration
	// Dedicated says the process does nothing but communicate (a
	// benchmark): the only work its polling could delay is another rank's
	// part of the same operation, and sched_yield hands the CPU to that rank
	// at once, so it polls even where the host's ranks outnumber its CPUs
	// (as OpenMPI does when oversubscribed, mpi_yield_when_idle).
	Dedicated bool
	// Logger receives join and failure events (default: discard).
	Logger *slog.Logger
}

// withDefaults fills zero fields and checks the rest.
func (o Options) withDefaults() (Options, error) {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.JoinTimeout == 0 {
		o.JoinTimeout = DefaultJoinTimeout
	}
	if o.ChunkBytes == 0 {
		o.ChunkBytes = DefaultChunkBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.Timeout < 0:
		return o, fmt.Errorf("collective: options timeout (%v) must be positive", o.Timeout)
	case o.JoinTimeout < 0:
		return o, fmt.Errorf("collective: options join timeout (%v) must be positive", o.JoinTimeout)
	case o.ChunkBytes < MinChunkBytes || o.ChunkBytes > MaxChunkBytes:
		return o, fmt.Errorf("collective: options chunk bytes (%d) must be within %d..%d", o.ChunkBytes, MinChunkBytes, MaxChunkBytes)
	}
	return o, nil
}

// ErrPeerLost means this generation is over: a peer closed, reset or stopped
// answering, or another rank reported such a failure. The buffer of the
// failed call holds undefined values (do not apply this step), the
// communicator is unusable, and the caller should Close it and Join a new
// generation. Errors wrapping it are *PeerLostError values; match with
// errors.Is(err, ErrPeerLost).
var ErrPeerLost = errors.New("collective: peer lost")

// ErrClosed is returned by calls on a communicator after Close.
var ErrClosed = errors.New("collective: communicator closed")

// PeerLostError says which peer was lost, during which operation and bucket.
type PeerLostError struct {
	// Peer is the rank that was lost: the neighbour whose connection failed,
	// or the rank named in an abort notice relayed from another rank.
	Peer int
	// Addr is Peer's address, if known.
	Addr string
	// Op names the operation that failed: "allreduce", "broadcast", …
	Op string
	// Bucket is the gradient bucket's index (see BucketReducer), or -1.
	Bucket int
	// Err is the underlying cause (EOF, reset, timeout, relayed notice).
	Err error
}

func (e *PeerLostError) Error() string {
	where := e.Op
	if e.Bucket >= 0 {
		where = fmt.Sprintf("%s of bucket %d", e.Op, e.Bucket)
	}
	addr := ""
	if e.Addr != "" {
		addr = " (" + e.Addr + ")"
	}
	return fmt.Sprintf("collective: peer lost: rank %d%s during %s: %v", e.Peer, addr, where, e.Err)
}

// Is makes errors.Is(err, ErrPeerLost) true.
func (e *PeerLostError) Is(target error) bool { return target == ErrPeerLost }

// Unwrap returns the cause.
func (e *PeerLostError) Unwrap() error { return e.Err }
