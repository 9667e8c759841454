package collective

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// ring is the TCP (or any StreamLayer) ring communicator.
//
// Rank r writes data to rank r+1 on next and reads data from rank r−1 on
// prev. Each operation is a fixed schedule of units (one chunk of one
// segment at one ring step) that both ends of a connection know, so the data
// needs no framing. A persistent sender goroutine writes the send units;
// the caller's goroutine reads (and reduces) the receive units. The send of
// a unit waits only for the receive of the unit it forwards, so chunk k+1 is
// on the wire while chunk k is reduced and chunk k−1 travels onwards.
//
// The reverse directions carry 8-byte abort notices: prev's towards rank
// r−1, next's from rank r+1 (read by the notice goroutine). A rank that
// detects a failure tells its predecessor, which tells its own, so the news
// travels the whole ring backwards, around the dead rank.
type ring struct {
	rank, size int
	jobID      string
	generation uint64
	addrs      []string
	opts       Options
	log        *slog.Logger
	next, prev net.Conn   // nil in a world of one
	poll       *pollLinks // TCP links: operations run on the caller's goroutine (runPolled); nil otherwise

	scratch  []float32 // receive buffer for reductions, reused by every call
	barrier  []float32 // Size() floats for Barrier's all-gather
	gathered []float32 // Size() × the small-message limit, for allReduceSmall
	token    [1]float32
	plan     plan               // the running operation; written only between operations
	steps    [maxPairSteps]plan // planSteps' steps (halving.go)
	header   opHeader           // the running operation's header (header.go)
	seq      uint32             // operations that have communicated
	hdrOut   [headerBytes]byte
	hdrIn    [headerBytes]byte
	work     chan *plan    // caller → sender: start sending this plan
	sendDone chan error    // sender → caller: the plan's sends finished
	kick     chan struct{} // receiver → sender: recvDone advanced
	sentKick chan struct{} // sender → receiver: sent advanced
	recvDone atomic.Int64  // receive units finished in the running plan
	sent     atomic.Int64  // send units finished in the running plan
	busy     atomic.Bool   // an operation is running (catches concurrent use)
	wg       sync.WaitGroup

	dead      chan struct{} // closed by the first failure or Close
	abortOnce sync.Once
	mu        sync.Mutex // protects err, closed and nextGone
	err       error      // the first failure; sticky
	closed    bool
	nextGone  bool // rank r+1 closed between operations (noticeClosed)
}

var _ Communicator = (*ring)(nil)

// recvPiece bounds one read+reduce, so the received bytes are still in
// cache (L2) when they are added. Measured at 2 ranks (median µs of 1 MiB /
// 16 MiB all-reduces, three interleaved runs): 16 KiB 1248 / 13885, 64 KiB
// 563–1055 / 9263–9572, 256 KiB 444–469 / 8611–9274, 1 MiB 419 / 8952.
const recvPiece = 256 << 10 / 4

// sendWindow bounds how far an exchange's sends run ahead of its additions
// (pollLinks.sendAhead says why).
const sendWindow = 768 << 10

// smallAllReduceBytes bounds the bytes each rank sends in allReduceSmall,
// (n−1)·len(buf)·4. Below it a message costs mostly latency, so fewer steps
// win over fewer bytes.
const smallAllReduceBytes = 64 << 10

// smallLimit is the longest buffer (in floats) allReduceSmall takes.
func (r *ring) smallLimit() int {
	if r.size < 2 {
		return 0
	}
	return smallAllReduceBytes / 4 / (r.size - 1)
}

// notice kinds on the reverse direction.
const (
	noticePeerLost = 1 // the rank in the notice was lost
	noticeAborted  = 2 // the sender gave up inside an operation (cancelled or closed)
	noticeClosed   = 3 // the sender closed between operations
)

// newRing builds rank rv.Rank's communicator on its ring connections and,
// in worlds of 2^m ranks, its pair links (halving.go; nil otherwise).
func newRing(rv Rendezvous, opts Options, next, prev net.Conn, pairs []net.Conn) *ring {
	r := &ring{
		rank: rv.Rank, size: rv.WorldSize, jobID: rv.JobID, generation: rv.Generation,
		addrs: append([]string(nil), rv.Addrs...), opts: opts,
		log:  opts.Logger.With("job", rv.JobID, "generation", rv.Generation, "rank", rv.Rank),
		next: next, prev: prev,
		barrier:  make([]float32, rv.WorldSize),
		work:     make(chan *plan),
		sendDone: make(chan error, 1),
		kick:     make(chan struct{}, 1),
		sentKick: make(chan struct{}, 1),
		dead:     make(chan struct{}),
	}
	if rv.WorldSize > 1 {
		r.scratch = make([]float32, min(recvPiece, opts.ChunkBytes/4))
		r.poll = newPollLinks(r, next, prev, pairs)
		if r.poll == nil {
			// The goroutine path runs every operation on the ring.
			for _, c := range pairs {
				_ = c.Close()
			}
		}
		r.opts.SpinWait = spinWait(opts, rv, runtime.NumCPU(), runtime.GOMAXPROCS(0))
		r.gathered = make([]float32, rv.WorldSize*r.smallLimit())
		for i := range r.scratch { // first touch now, not in the first reduction
			r.scratch[i] = 0
		}
		for i := range r.gathered {
			r.gathered[i] = 0
		}
		r.wg.Add(1)
		go r.noticeLoop()
		if r.poll == nil {
			r.wg.Add(1)
			go r.sendLoop()
		}
	}
	return r
}

// spinWait resolves Options.SpinWait for rendezvous rv on a host of cpus
// CPUs whose ranks each run procs threads of compute.
func spinWait(o Options, rv Rendezvous, cpus, procs int) time.Duration {
	if o.SpinWait != 0 {
		return max(o.SpinWait, 0)
	}
	if o.Dedicated {
		return DefaultSpinWait
	}
	host, _, err := net.SplitHostPort(rv.Addrs[rv.Rank])
	if err != nil {
		return DefaultSpinWait // not host:port (in-memory): no host to share
	}
	local := 0
	for _, a := range rv.Addrs {
		if h, _, err := net.SplitHostPort(a); err == nil && h == host {
			local++
		}
	}
	if local*procs > cpus {
		return 0
	}
	return DefaultSpinWait
}

func (r *ring) Rank() int { return r.rank }
func (r *ring) Size() int { return r.size }

// AllReduce is a reduce-scatter followed by an all-gather. The buffer is cut
// into Size() segments; at step s rank r sends segment r−s and receives
// segment r−s−1. During the first n−1 steps the received segment is added
// to ours (each segment is summed in the fixed order of the ring starting at
// its owner, so every rank ends with the same bits); during the last n−1 it
// replaces ours. Each rank sends and receives 2(n−1)/n of the buffer.
func (r *ring) AllReduce(ctx context.Context, buf []float32, op Op) error {
	if op != OpSum && op != OpAverage {
		return fmt.Errorf("collective: allreduce: invalid op %v", op)
	}
	if err := r.begin(); err != nil {
		return r.opError("allreduce", err)
	}
	defer r.busy.Store(false)
	if r.size == 1 || len(buf) == 0 {
		return nil
	}
	if r.size == 2 {
		r.plan = plan{kind: planExchange, buf: buf, op: op, divides: true}
		r.plan.layout(r.rank, r.size, r.opts.ChunkBytes)
		return r.run(ctx, "allreduce")
	}
	if r.pairPlan(buf, op) {
		return r.run(ctx, "allreduce")
	}
	if len(buf) <= r.smallLimit() {
		return r.allReduceSmall(ctx, buf, op)
	}
	r.plan = plan{kind: planRing, buf: buf, op: op, firstStep: 0, lastStep: 2*r.size - 2}
	r.plan.layout(r.rank, r.size, r.opts.ChunkBytes)
	return r.run(ctx, "allreduce")
}

// allReduceSmall is the latency path for three ranks or more (two ranks
// exchange, planExchange): the ring all-gathers every rank's whole buffer
// (n−1 steps instead of 2(n−1)),
// then every rank adds the n buffers in rank order, so all ranks compute
// the same bits.
func (r *ring) allReduceSmall(ctx context.Context, buf []float32, op Op) error {
	m := len(buf)
	all := r.gathered[:r.size*m]
	if err := r.allGather(ctx, buf, all, "allreduce"); err != nil {
		return err
	}
	if r.rank != 0 {
		copy(buf, all[:m])
	}
	for src := 1; src < r.size; src++ {
		add(buf, all[src*m:(src+1)*m])
	}
	if op == OpAverage {
		div(buf, float32(r.size))
	}
	return nil
}

// Broadcast pipelines root's buffer along the ring root → root+1 → … .
func (r *ring) Broadcast(ctx context.Context, buf []float32, root int) error {
	if root < 0 || root >= r.size {
		return fmt.Errorf("collective: broadcast: root %d is outside 0..%d", root, r.size-1)
	}
	if err := r.begin(); err != nil {
		return r.opError("broadcast", err)
	}
	defer r.busy.Store(false)
	if r.size == 1 || len(buf) == 0 {
		return nil
	}
	r.plan = plan{kind: planBroadcast, buf: buf, root: root}
	r.plan.layout(r.rank, r.size, r.opts.ChunkBytes)
	return r.run(ctx, "broadcast")
}

// AllGather copies send into its place in recv and runs the all-gather half
// of AllReduce's schedule.
func (r *ring) AllGather(ctx context.Context, send, recv []float32) error {
	if len(recv) != r.size*len(send) {
		return fmt.Errorf("collective: allgather: recv has %d floats, want %d (world size %d × send %d)", len(recv), r.size*len(send), r.size, len(send))
	}
	if err := r.begin(); err != nil {
		return r.opError("allgather", err)
	}
	defer r.busy.Store(false)
	return r.allGather(ctx, send, recv, "allgather")
}

// Barrier all-gathers one float: no rank can receive every rank's float
// before every rank has sent it. With pair links it all-reduces one zero
// by recursive doubling instead, which no rank finishes either before every
// rank has sent, in log2(n) steps rather than n−1.
func (r *ring) Barrier(ctx context.Context) error {
	if err := r.begin(); err != nil {
		return r.opError("barrier", err)
	}
	defer r.busy.Store(false)
	if r.pairPlan(r.token[:], OpSum) {
		return r.run(ctx, "barrier")
	}
	return r.allGather(ctx, r.token[:], r.barrier, "barrier")
}

func (r *ring) allGather(ctx context.Context, send, recv []float32, name string) error {
	copy(recv[r.rank*len(send):], send)
	if r.size == 1 || len(send) == 0 {
		return nil
	}
	// Rank r starts out owning segment r; AllReduce's all-gather steps
	// n−1..2n−3 send segment r−s, so shift the segments by n−1.
	r.plan = plan{kind: planRing, buf: recv, firstStep: r.size - 1, lastStep: 2*r.size - 2, shift: r.size - 1}
	r.plan.layout(r.rank, r.size, r.opts.ChunkBytes)
	return r.run(ctx, name)
}

// begin claims the communicator for one operation.
func (r *ring) begin() error {
	if !r.busy.CompareAndSwap(false, true) {
		return errors.New("concurrent calls on one communicator (it is used by one goroutine at a time)")
	}
	r.mu.Lock()
	err := r.err
	r.mu.Unlock()
	if err != nil {
		r.busy.Store(false)
	}
	return err
}

// run executes r.plan: sends on the sender goroutine, receives here.
func (r *ring) run(ctx context.Context, name string) error {
	if ctx.Err() != nil {
		// Peers may already be waiting for us: abort so that they learn.
		r.abort(context.Cause(ctx), noticeAborted, r.rank)
		return r.opError(name, r.failure())
	}
	r.mu.Lock()
	gone := r.nextGone
	r.mu.Unlock()
	if gone && r.plan.sendUnits() > 0 { // a broadcast's last rank sends nothing
		err := r.linkError(r.nextRank(), "sending to", io.ErrClosedPipe)
		r.abort(err, noticePeerLost, r.nextRank())
		return r.opError(name, r.failure())
	}
	deadline := time.Now().Add(r.opts.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if r.poll == nil {
		_ = r.prev.SetReadDeadline(deadline)
		_ = r.next.SetWriteDeadline(deadline)
	}
	r.seq++
	r.header = opHeader{op: opCode(name), seq: r.seq, count: uint64(len(r.plan.buf))}
	r.header.encode(&r.hdrOut)
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() {
			r.abort(context.Cause(ctx), noticeAborted, r.rank)
		})
		defer stop()
	}

	if r.poll != nil {
		err := r.runPolled(&r.plan, deadline)
		r.plan.buf = nil // do not keep the caller's buffer alive
		for i := range r.plan.steps {
			r.plan.steps[i].buf = nil
		}
		if err != nil {
			r.abortFor(err)
			return r.opError(name, r.failure())
		}
		return nil
	}
	r.recvDone.Store(0)
	r.sent.Store(0)
	select {
	case r.work <- &r.plan:
	case <-r.dead:
		return r.opError(name, r.failure())
	}
	recvErr := r.receive(&r.plan)
	if recvErr != nil {
		// Abort before waiting for the sender: it may be blocked on a peer
		// that will not read until it hears of the failure.
		r.abort(recvErr, noticePeerLost, r.prevRank())
	}
	sendErr := <-r.sendDone
	r.plan.buf = nil // do not keep the caller's buffer alive
	if recvErr == nil && sendErr == nil {
		return nil
	}
	if sendErr != nil {
		r.abort(sendErr, noticePeerLost, r.nextRank())
	}
	return r.opError(name, r.failure())
}

// receive reads the plan's receive units in order, reducing or copying them
// into the buffer, and tells the sender after each unit.
func (r *ring) receive(p *plan) error {
	n := p.recvUnits()
	if n > 0 {
		if _, err := io.ReadFull(r.prev, r.hdrIn[:]); err != nil {
			return r.linkError(r.prevRank(), "receiving from", err)
		}
		if err := r.checkHeader(&r.hdrIn); err != nil {
			return err
		}
	}
	for u := range n {
		if err := r.waitSent(p.recvNeedsSent(u)); err != nil {
			return err
		}
		if err := r.recvUnit(p, u); err != nil {
			return err
		}
		r.recvDone.Store(int64(u + 1))
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// waitSent waits until the sender has finished need units. A received
// region may still be going out from an earlier step. The ring itself
// orders the two (what arrives now was sent after ours was received), but
// only through the network, which neither Go's memory model nor the race
// detector sees; this wait makes it explicit, and in practice never blocks
// for long.
func (r *ring) waitSent(need int) error {
	for r.sent.Load() < int64(need) {
		select {
		case <-r.sentKick:
		case <-r.dead:
			return r.failure()
		}
	}
	return nil
}

// recvUnit reads receive unit u and adds it to, or copies it over, its
// region of the buffer.
func (r *ring) recvUnit(p *plan, u int) error {
	lo, hi, reduce, last := p.recvUnit(u)
	if !reduce {
		if err := readFloats(r.prev, p.buf[lo:hi]); err != nil {
			return r.linkError(r.prevRank(), "receiving from", err)
		}
		return nil
	}
	for lo < hi {
		m := min(hi-lo, len(r.scratch))
		if err := readFloats(r.prev, r.scratch[:m]); err != nil {
			return r.linkError(r.prevRank(), "receiving from", err)
		}
		if err := r.waitSent(p.addNeedsSent(u)); err != nil {
			return err
		}
		dst := p.buf[lo : lo+m]
		if last && p.op == OpAverage {
			addDiv(dst, r.scratch[:m], float32(r.size))
		} else {
			add(dst, r.scratch[:m])
		}
		lo += m
	}
	return nil
}

// sendLoop runs the send side of every plan until the ring dies.
func (r *ring) sendLoop() {
	defer r.wg.Done()
	for {
		select {
		case p := <-r.work:
			err := r.send(p)
			if err != nil {
				// Abort now: the receiver may be waiting for this sender.
				r.abort(err, noticePeerLost, r.nextRank())
			}
			r.sendDone <- err
		case <-r.dead:
			return
		}
	}
}

func (r *ring) send(p *plan) error {
	n := p.sendUnits()
	if n > 0 {
		if _, err := r.next.Write(r.hdrOut[:]); err != nil {
			return r.linkError(r.nextRank(), "sending to", err)
		}
	}
	for u := range n {
		lo, hi, need := p.sendUnit(u)
		for r.recvDone.Load() < int64(need) {
			select {
			case <-r.kick:
			case <-r.dead:
				return r.failure()
			}
		}
		if lo < hi {
			if err := writeFloats(r.next, p.buf[lo:hi]); err != nil {
				return r.linkError(r.nextRank(), "sending to", err)
			}
		}
		r.sent.Store(int64(u + 1))
		select {
		case r.sentKick <- struct{}{}:
		default:
		}
	}
	return nil
}

// noticeLoop reads abort notices that rank r+1 sends backwards, and notices
// when it goes away even while no operation runs.
func (r *ring) noticeLoop() {
	defer r.wg.Done()
	var msg [8]byte
	var err error
	if r.poll != nil {
		err = r.poll.readNotice(&msg)
	} else {
		_, err = io.ReadFull(r.next, msg[:])
	}
	select {
	case <-r.dead:
		return // we closed or failed first; nothing more to learn
	default:
	}
	if err != nil {
		r.abort(r.linkError(r.nextRank(), "connection to", err), noticePeerLost, r.nextRank())
		return
	}
	lost := int(binary.LittleEndian.Uint32(msg[4:]))
	if lost < 0 || lost >= r.size || lost == r.rank {
		// Rank r+1 lost contact with us: from here, it is the lost one.
		lost = r.nextRank()
	}
	var cause error
	switch msg[0] {
	case noticeClosed:
		// Rank r+1 finished every operation it joined, so it has all our
		// data of the operation we may still be finishing. Only a later
		// send to it fails; make that happen at once.
		r.mu.Lock()
		r.nextGone = true
		r.mu.Unlock()
		if r.poll == nil {
			_ = r.next.SetWriteDeadline(time.Unix(1, 0))
		}
		return
	case noticeAborted:
		cause = fmt.Errorf("rank %d closed or cancelled its communicator during an operation", lost)
	default:
		cause = fmt.Errorf("relayed by rank %d", r.nextRank())
	}
	r.abort(&PeerLostError{Peer: lost, Addr: r.addrs[lost], Bucket: -1, Err: cause}, noticePeerLost, lost)
}

// abortFor aborts with err, naming the peer it lost when it is a
// *PeerLostError (otherwise this rank gave up).
func (r *ring) abortFor(err error) {
	lost := r.rank
	var pl *PeerLostError
	if errors.As(err, &pl) {
		lost = pl.Peer
	}
	kind := byte(noticePeerLost)
	if lost == r.rank {
		kind = noticeAborted
	}
	r.abort(err, kind, lost)
}

// abort records the first failure, tells rank r−1 (so the news goes round
// the ring), and unblocks this rank's pending reads and writes.
func (r *ring) abort(cause error, kind byte, lost int) {
	r.abortOnce.Do(func() {
		if !r.end(cause) {
			return
		}
		r.log.Warn("collective: ring aborted", "err", cause)
		r.notifyPrev(kind, lost)
		if r.poll != nil {
			r.poll.wake()
		} else {
			past := time.Unix(1, 0)
			_ = r.prev.SetDeadline(past)
			_ = r.next.SetDeadline(past)
		}
	})
}

// Close ends this rank's membership. Between operations it is graceful:
// peers still finishing the last operation finish it, and fail only when
// they next need this rank. During an operation (another goroutine's) it
// aborts, and every peer's operation fails. Close waits for the ring's
// goroutines to end.
func (r *ring) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	if r.busy.CompareAndSwap(false, true) {
		r.closeGracefully()
		r.busy.Store(false)
	} else {
		r.abort(ErrClosed, noticeAborted, r.rank)
	}
	if r.poll != nil {
		r.poll.wake() // the notice reader and an aborted operation
		r.wg.Wait()
		// An aborted operation may still be returning from the sockets:
		// their descriptors must not be closed (and reused) under it.
		for !r.busy.CompareAndSwap(false, true) {
			time.Sleep(100 * time.Microsecond)
		}
		r.poll.close()
		r.busy.Store(false)
		return nil
	}
	if r.size > 1 {
		_ = r.next.Close()
		_ = r.prev.Close()
	}
	r.wg.Wait()
	return nil
}

// closeGracefully tells rank r−1 that this rank left between operations,
// and makes later calls return ErrClosed.
func (r *ring) closeGracefully() {
	r.abortOnce.Do(func() {
		if r.end(ErrClosed) {
			r.notifyPrev(noticeClosed, r.rank)
		}
	})
}

// end makes cause the ring's sticky failure and marks it dead; it reports
// whether there are peers to tell (the ring has more than one rank). The
// caller runs it once, under abortOnce.
func (r *ring) end(cause error) bool {
	r.mu.Lock()
	r.err = cause
	r.mu.Unlock()
	close(r.dead)
	return r.size > 1
}

// notifyPrev sends rank r−1 a notice of kind naming rank who, giving the
// write 200 ms: a peer that is gone must not hold up the ending.
func (r *ring) notifyPrev(kind byte, who int) {
	var msg [8]byte
	msg[0] = kind
	binary.LittleEndian.PutUint32(msg[4:], uint32(who))
	if r.poll != nil {
		r.poll.writeNotice(msg[:], 200*time.Millisecond)
		return
	}
	_ = r.prev.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	_, _ = r.prev.Write(msg[:])
}

func (r *ring) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// opError names the operation in a sticky failure.
func (r *ring) opError(name string, err error) error {
	var pl *PeerLostError
	if errors.As(err, &pl) {
		cp := *pl
		cp.Op = name
		return &cp
	}
	if errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("collective: %s: %w", name, err)
}

// linkError turns an I/O error on the link to peer into ErrPeerLost, unless
// this rank had already failed (then the first failure is the story).
func (r *ring) linkError(peer int, doing string, err error) error {
	select {
	case <-r.dead:
		return r.failure()
	default:
	}
	r.mu.Lock()
	gone := r.nextGone && peer == r.nextRank()
	r.mu.Unlock()
	if gone {
		err = fmt.Errorf("rank %d closed its communicator", peer)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("%s rank %d: no progress within the %v operation timeout: %w", doing, peer, r.opts.Timeout, err)
	} else {
		err = fmt.Errorf("%s rank %d: %w", doing, peer, err)
	}
	return &PeerLostError{Peer: peer, Addr: r.addrs[peer], Bucket: -1, Err: err}
}

func (r *ring) nextRank() int { return (r.rank + 1) % r.size }
func (r *ring) prevRank() int { return (r.rank + r.size - 1) % r.size }

// readFloats fills dst from c; the wire format is the host's little-endian
// float32 layout, so the bytes go straight into the slice.
func readFloats(c net.Conn, dst []float32) error {
	_, err := io.ReadFull(c, floatBytes(dst))
	return err
}

func writeFloats(c net.Conn, src []float32) error {
	_, err := c.Write(floatBytes(src))
	return err
}

func floatBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}
