// Package nccl is the GPU implementation of collective.Communicator: NCCL
// (libnccl.so.2, loaded at run time through the cuda package) reducing
// buffers on the device. The NCCL unique id is made by rank 0 and handed to
// the other ranks over a bootstrap communicator (the TCP ring of the same
// rendezvous), so no other channel is needed.
//
// Buffers: a slice from the CUDA backend's Alloc (managed memory) is used in
// place when Options.Buffers recognises it; any other slice is copied to a
// device buffer and back. NCCL runs on its own stream: buffers must be
// complete when a call starts (the model synchronises before each
// grad-ready hook). Calls are synchronous (they return when buf holds
// the result) and honour their context: cancellation or a failure inside
// NCCL aborts the communicator (ncclCommAbort) and returns an error wrapping
// collective.ErrPeerLost, as the TCP ring does.
//
// A Comm is used by one goroutine at a time.
package nccl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unsafe"

	"github.com/fmtrain/fmtrain/collective"
	cu "github.com/fmtrain/fmtrain/cuda"
)

// Resolver tells which slices are device-addressable; *kernels/cuda.Backend
// implements it.
type Resolver interface {
	DevicePointer(s []float32) (cu.DevicePtr, bool)
}

// Options configure New.
type Options struct {
	// Ordinal or PCIBusID select the GPU (as for the CUDA backend).
	Ordinal  int
	PCIBusID string
	// Buffers recognises slices already on the device; nil stages every call.
	Buffers Resolver
	// BeforeCollective, when set, runs before each operation on the calling
	// goroutine, to make sure the buffers' producers have finished. Leave
	// it nil for gradients from the model: it synchronises its backend
	// before each grad-ready hook. Never pass the backend's Synchronize when
	// collectives run on another goroutine than the backend's ops (the
	// bucket reducer's): a Backend is not safe for concurrent use.
	BeforeCollective func() error
	// Logger receives start-up events; nil discards them.
	Logger *slog.Logger
}

// Comm is an NCCL communicator.
type Comm struct {
	lib    *cu.NCCL
	ctx    *cu.Context
	stream *cu.Stream
	comm   *cu.Comm
	opts   Options
	// staging is a device buffer for slices outside device memory.
	staging      cu.DevicePtr
	stagingBytes int
	closed       bool
	broken       error
}

var _ collective.Communicator = (*Comm)(nil)

// New builds the NCCL communicator of boot's group (same ranks, same size):
// rank 0 makes the unique id, boot broadcasts it, and every rank joins.
// boot stays the caller's; New neither keeps nor closes it.
func New(ctx context.Context, boot collective.Communicator, opts Options) (*Comm, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	lib, err := cu.LoadNCCL()
	if err != nil {
		return nil, fmt.Errorf("nccl: %w", err)
	}
	drv, err := cu.LoadDriver()
	if err != nil {
		return nil, fmt.Errorf("nccl: %w", err)
	}
	var dev cu.Device
	if opts.PCIBusID != "" {
		if dev, err = drv.DeviceByPCIBusID(opts.PCIBusID); err != nil {
			opts.Logger.Warn("nccl: device by PCI bus id failed, using the ordinal", "pci_bus_id", opts.PCIBusID, "ordinal", opts.Ordinal, "err", err)
			dev, err = drv.Device(opts.Ordinal)
		}
	} else {
		dev, err = drv.Device(opts.Ordinal)
	}
	if err != nil {
		return nil, fmt.Errorf("nccl: %w", err)
	}
	id, err := exchangeID(ctx, boot, lib.NewUniqueID)
	if err != nil {
		return nil, err
	}
	cctx, err := drv.Retain(dev)
	if err != nil {
		return nil, fmt.Errorf("nccl: %w", err)
	}
	c := &Comm{lib: lib, ctx: cctx, opts: opts}
	unbind, err := cctx.Bind()
	if err != nil {
		cctx.Release()
		return nil, fmt.Errorf("nccl: %w", err)
	}
	defer unbind()
	if c.stream, err = cctx.NewStream(); err != nil {
		cctx.Release()
		return nil, fmt.Errorf("nccl: %w", err)
	}
	// ncclCommInitRank blocks until every rank has joined.
	if c.comm, err = lib.InitRank(id, boot.Size(), boot.Rank()); err != nil {
		c.stream.Destroy()
		cctx.Release()
		return nil, fmt.Errorf("nccl: rank %d of %d: %w", boot.Rank(), boot.Size(), err)
	}
	opts.Logger.Info("nccl communicator ready", "rank", boot.Rank(), "size", boot.Size(), "nccl", lib.Version, "lib", lib.Path)
	return c, nil
}

// idFloats is the unique id as one float per byte (0..255), exact through
// any float32 transport.
func idFloats(id cu.UniqueID) []float32 {
	f := make([]float32, len(id.Internal))
	for i, b := range id.Internal {
		f[i] = float32(b)
	}
	return f
}

func idFromFloats(f []float32) (cu.UniqueID, error) {
	var id cu.UniqueID
	if len(f) != len(id.Internal) {
		return id, fmt.Errorf("nccl: unique id of %d values, want %d", len(f), len(id.Internal))
	}
	for i, v := range f {
		if v < 0 || v > 255 || v != float32(int(v)) {
			return id, fmt.Errorf("nccl: unique id byte %d is %v", i, v)
		}
		id.Internal[i] = byte(v)
	}
	return id, nil
}

// exchangeID makes the id on rank 0 and broadcasts it over boot.
func exchangeID(ctx context.Context, boot collective.Communicator, newID func() (cu.UniqueID, error)) (cu.UniqueID, error) {
	buf := make([]float32, cu.UniqueIDBytes)
	if boot.Rank() == 0 {
		id, err := newID()
		if err != nil {
			return id, fmt.Errorf("nccl: %w", err)
		}
		copy(buf, idFloats(id))
	}
	if err := boot.Broadcast(ctx, buf, 0); err != nil {
		return cu.UniqueID{}, fmt.Errorf("nccl: sharing the unique id: %w", err)
	}
	return idFromFloats(buf)
}

// Rank implements collective.Communicator.
func (c *Comm) Rank() int { return c.comm.Rank }

// Size implements collective.Communicator.
func (c *Comm) Size() int { return c.comm.Size }

// run performs one collective: bind, stage, enqueue, wait (honouring ctx),
// copy back.
func (c *Comm) run(ctx context.Context, name string, send, recv []float32, enqueue func(send, recv cu.DevicePtr) error) error {
	if c.closed {
		return collective.ErrClosed
	}
	if c.broken != nil {
		return c.broken
	}
	if c.opts.BeforeCollective != nil {
		if err := c.opts.BeforeCollective(); err != nil {
			return fmt.Errorf("nccl: %s: %w", name, err)
		}
	}
	unbind, err := c.ctx.Bind()
	if err != nil {
		return fmt.Errorf("nccl: %s: %w", name, err)
	}
	defer unbind()
	sp, sStaged, err := c.device(send, 0)
	if err != nil {
		return fmt.Errorf("nccl: %s: %w", name, err)
	}
	rp, rStaged := sp, sStaged
	if len(recv) > 0 && (len(send) == 0 || &recv[0] != &send[0]) {
		if rp, rStaged, err = c.device(recv, len(send)*4); err != nil {
			return fmt.Errorf("nccl: %s: %w", name, err)
		}
	}
	if err := enqueue(sp, rp); err != nil {
		return c.fail(name, err)
	}
	if err := c.wait(ctx, name); err != nil {
		return err
	}
	if rStaged && len(recv) > 0 {
		if err := c.stream.CopyDtoHAsync(unsafe.Pointer(&recv[0]), rp, len(recv)*4); err != nil {
			return c.fail(name, err)
		}
		if err := c.stream.Synchronize(); err != nil {
			return c.fail(name, err)
		}
	}
	return nil
}

// device returns s's device address, staging it at byte offset off of the
// staging buffer when it is not device memory.
func (c *Comm) device(s []float32, off int) (cu.DevicePtr, bool, error) {
	if len(s) == 0 {
		return 0, false, nil
	}
	if c.opts.Buffers != nil {
		if p, ok := c.opts.Buffers.DevicePointer(s); ok {
			return p, false, nil
		}
	}
	need := off + len(s)*4
	if need > c.stagingBytes {
		if c.staging != 0 {
			c.ctx.MemFree(c.staging)
			c.staging, c.stagingBytes = 0, 0
		}
		size := max(need, 2*c.stagingBytes, 1<<20)
		p, err := c.ctx.MemAlloc(size)
		if err != nil {
			return 0, false, err
		}
		c.staging, c.stagingBytes = p, size
	}
	p := c.staging + cu.DevicePtr(off)
	if err := c.stream.CopyHtoDAsync(p, unsafe.Pointer(&s[0]), len(s)*4); err != nil {
		return 0, false, err
	}
	return p, true, nil
}

// wait blocks until the stream is idle or ctx ends; on ctx's end or an
// asynchronous NCCL error it aborts the communicator.
func (c *Comm) wait(ctx context.Context, name string) error {
	done := make(chan error, 1)
	go func() {
		unbind, err := c.ctx.Bind()
		if err != nil {
			done <- err
			return
		}
		defer unbind()
		done <- c.stream.Synchronize()
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return c.fail(name, err)
			}
			return nil
		case <-ctx.Done():
			c.comm.Abort()
			<-done
			return c.fail(name, ctx.Err())
		case <-tick.C:
			if err := c.comm.AsyncError(); err != nil {
				c.comm.Abort()
				<-done
				return c.fail(name, err)
			}
		}
	}
}

// fail marks the communicator broken: like the TCP ring, a failed
// collective ends the generation.
func (c *Comm) fail(name string, err error) error {
	c.broken = &collective.PeerLostError{Peer: -1, Op: name, Bucket: -1, Err: fmt.Errorf("nccl: %w", err)}
	return c.broken
}

// AllReduce implements collective.Communicator (ncclSum or ncclAvg).
func (c *Comm) AllReduce(ctx context.Context, buf []float32, op collective.Op) error {
	var nop int
	switch op {
	case collective.OpSum:
		nop = cu.NCCLSum
	case collective.OpAverage:
		nop = cu.NCCLAvg
	default:
		return fmt.Errorf("nccl: allreduce: unknown op %v", op)
	}
	if len(buf) == 0 {
		return nil
	}
	return c.run(ctx, "allreduce", buf, buf, func(s, r cu.DevicePtr) error {
		return c.comm.AllReduce(s, r, len(buf), nop, c.stream)
	})
}

// Broadcast implements collective.Communicator.
func (c *Comm) Broadcast(ctx context.Context, buf []float32, root int) error {
	if root < 0 || root >= c.Size() {
		return fmt.Errorf("nccl: broadcast: root %d outside 0..%d", root, c.Size()-1)
	}
	if len(buf) == 0 {
		return nil
	}
	return c.run(ctx, "broadcast", buf, buf, func(s, r cu.DevicePtr) error {
		return c.comm.Broadcast(s, r, len(buf), root, c.stream)
	})
}

// AllGather implements collective.Communicator.
func (c *Comm) AllGather(ctx context.Context, send, recv []float32) error {
	if len(recv) != c.Size()*len(send) {
		return fmt.Errorf("nccl: allgather: recv holds %d values, want %d×%d", len(recv), c.Size(), len(send))
	}
	if len(send) == 0 {
		return nil
	}
	return c.run(ctx, "allgather", send, recv, func(s, r cu.DevicePtr) error {
		return c.comm.AllGather(s, r, len(send), c.stream)
	})
}

// Barrier implements collective.Communicator: an all-reduce of one value.
func (c *Comm) Barrier(ctx context.Context) error {
	one := []float32{1}
	return c.AllReduce(ctx, one, collective.OpSum)
}

// Close implements collective.Communicator.
func (c *Comm) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	unbind, err := c.ctx.Bind()
	if err != nil {
		return err
	}
	defer unbind()
	var errs []error
	if c.broken != nil {
		errs = append(errs, c.comm.Abort())
	} else {
		errs = append(errs, c.comm.Destroy())
	}
	if c.staging != 0 {
		errs = append(errs, c.ctx.MemFree(c.staging))
	}
	errs = append(errs, c.stream.Destroy(), c.ctx.Release())
	return errors.Join(errs...)
}
