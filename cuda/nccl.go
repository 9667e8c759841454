package cuda

import (
	"fmt"
	"sync"
)

// NCCL constants (pinned in prototypes.h, checked when nccl.h is available).
const (
	ncclSuccess    = 0
	ncclInProgress = 7
	// NCCLFloat32 is ncclFloat32.
	NCCLFloat32 = 7
	// NCCLSum and NCCLAvg are ncclRedOp_t values.
	NCCLSum = 0
	NCCLAvg = 4
	// UniqueIDBytes is NCCL_UNIQUE_ID_BYTES.
	UniqueIDBytes = 128
)

// UniqueID is an ncclUniqueId: 128 opaque bytes made by rank 0 and given
// to every rank (through the rendezvous) before NCCLCommInitRank. It is
// passed to ncclCommInitRank by value, which purego supports on linux amd64
// and arm64 as a struct argument.
type UniqueID struct {
	Internal [UniqueIDBytes]byte
}

// ncclFuncs are the bound libnccl.so.2 entry points (see prototypes.h).
type ncclFuncs struct {
	ncclGetVersion        func(v *int32) int32
	ncclGetErrorString    func(r int32) string
	ncclGetUniqueId       func(id *UniqueID) int32
	ncclCommInitRank      func(comm *uintptr, nranks int32, id UniqueID, rank int32) int32
	ncclCommDestroy       func(comm uintptr) int32
	ncclCommAbort         func(comm uintptr) int32
	ncclCommGetAsyncError func(comm uintptr, r *int32) int32
	ncclAllReduce         func(send, recv DevicePtr, count uintptr, dt int32, op int32, comm, stream uintptr) int32
	ncclBroadcast         func(send, recv DevicePtr, count uintptr, dt int32, root int32, comm, stream uintptr) int32
	ncclAllGather         func(send, recv DevicePtr, sendCount uintptr, dt int32, comm, stream uintptr) int32
}

func (f *ncclFuncs) symbols() []symbol {
	return []symbol{
		{"ncclGetVersion", &f.ncclGetVersion},
		{"ncclGetErrorString", &f.ncclGetErrorString},
		{"ncclGetUniqueId", &f.ncclGetUniqueId},
		{"ncclCommInitRank", &f.ncclCommInitRank},
		{"ncclCommDestroy", &f.ncclCommDestroy},
		{"ncclCommAbort", &f.ncclCommAbort},
		{"ncclCommGetAsyncError", &f.ncclCommGetAsyncError},
		{"ncclAllReduce", &f.ncclAllReduce},
		{"ncclBroadcast", &f.ncclBroadcast},
		{"ncclAllGather", &f.ncclAllGather},
	}
}

// NCCL is the loaded libnccl (one per process).
type NCCL struct {
	f       ncclFuncs
	Path    string
	Version int // e.g. 22703 for 2.27.3
}

var (
	ncclOnce sync.Once
	ncclVal  *NCCL
	ncclErr  error
)

// LoadNCCL loads libnccl.so.2 once per process.
func LoadNCCL() (*NCCL, error) {
	ncclOnce.Do(func() {
		n := &NCCL{}
		if n.Path, ncclErr = loadAndBind(specNCCL, n.f.symbols()); ncclErr != nil {
			return
		}
		var v int32
		if ncclErr = n.check("ncclGetVersion", n.f.ncclGetVersion(&v)); ncclErr != nil {
			return
		}
		n.Version = int(v)
		ncclVal = n
	})
	return ncclVal, ncclErr
}

func (n *NCCL) check(call string, r int32) error {
	if r == ncclSuccess {
		return nil
	}
	e := &Error{Call: call, Code: int(r)}
	if n.f.ncclGetErrorString != nil {
		e.Name = n.f.ncclGetErrorString(r)
	}
	return e
}

// NewUniqueID makes the id rank 0 shares with the others.
func (n *NCCL) NewUniqueID() (UniqueID, error) {
	var id UniqueID
	err := n.check("ncclGetUniqueId", n.f.ncclGetUniqueId(&id))
	return id, err
}

// Comm is an NCCL communicator for one rank. Used by one goroutine at a
// time, with its device's context bound.
type Comm struct {
	n          *NCCL
	c          uintptr
	Rank, Size int
}

// InitRank joins the communicator of size ranks identified by id.
// It blocks until every rank has joined.
func (n *NCCL) InitRank(id UniqueID, size, rank int) (*Comm, error) {
	c := &Comm{n: n, Rank: rank, Size: size}
	if err := n.check("ncclCommInitRank", n.f.ncclCommInitRank(&c.c, int32(size), id, int32(rank))); err != nil {
		return nil, err
	}
	return c, nil
}

// AllReduce reduces count floats from send into recv (may be equal) on stream.
func (c *Comm) AllReduce(send, recv DevicePtr, count int, op int, s *Stream) error {
	return c.n.check("ncclAllReduce", c.n.f.ncclAllReduce(send, recv, uintptr(count), NCCLFloat32, int32(op), c.c, s.Handle()))
}

// Broadcast copies count floats from root's send into every rank's recv.
func (c *Comm) Broadcast(send, recv DevicePtr, count, root int, s *Stream) error {
	return c.n.check("ncclBroadcast", c.n.f.ncclBroadcast(send, recv, uintptr(count), NCCLFloat32, int32(root), c.c, s.Handle()))
}

// AllGather gathers sendCount floats from every rank into recv (rank order).
func (c *Comm) AllGather(send, recv DevicePtr, sendCount int, s *Stream) error {
	return c.n.check("ncclAllGather", c.n.f.ncclAllGather(send, recv, uintptr(sendCount), NCCLFloat32, c.c, s.Handle()))
}

// AsyncError reports an error raised inside NCCL's own threads (a peer
// lost, a network failure); nil when all is well or still in progress.
func (c *Comm) AsyncError() error {
	var r int32
	if err := c.n.check("ncclCommGetAsyncError", c.n.f.ncclCommGetAsyncError(c.c, &r)); err != nil {
		return err
	}
	if r == ncclSuccess || r == ncclInProgress {
		return nil
	}
	return c.n.check("ncclCommGetAsyncError(async)", r)
}

// Abort tears the communicator down without waiting for peers (use after
// a failure); Destroy waits for outstanding work.
func (c *Comm) Abort() error {
	return c.n.check("ncclCommAbort", c.n.f.ncclCommAbort(c.c))
}

// Destroy frees the communicator.
func (c *Comm) Destroy() error {
	return c.n.check("ncclCommDestroy", c.n.f.ncclCommDestroy(c.c))
}

// String describes the communicator for logs.
func (c *Comm) String() string { return fmt.Sprintf("nccl rank %d/%d", c.Rank, c.Size) }
