package collective

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pollLinks is the ring's pair of TCP sockets driven by non-blocking system
// calls from one goroutine: a progress engine in the manner of MPI's. Every
// operation runs on the caller's goroutine: it writes to rank r+1 and reads
// from rank r−1 whatever each socket takes or holds, reduces what arrived,
// and only when neither moves does it poll the sockets for a while
// (yielding the CPU between polls) and then sleep in poll(2).
//
// The ring owns the two descriptors outright (duplicates; the net.Conns are
// closed, which takes them out of Go's netpoller). Left in the netpoller,
// every arrival and every freed send buffer would also wake a runtime
// thread that has nothing to do with it: measured, one epoll wake-up and an
// extra thread's CPU per operation, which on two cores costs a small
// all-reduce more than the message itself.
type pollLinks struct {
	ring     *ring
	rfd, wfd int            // rank r−1 (prev) and rank r+1 (next)
	pairs    []int          // pair link k+1's descriptor at pairs[k] (halving.go)
	efd      int            // an eventfd that ends every wait: written once the ring is dead
	fds      [3]unix.PollFd // poll(2)'s set, kept here so waiting allocates nothing
	iov      [2]unix.Iovec  // readv(2)'s and writev(2)'s, likewise
	noteFds  [2]unix.PollFd // the notice reader's, used by another goroutine

	// The running operation (or step of one): it sends on sfd to rank
	// speer and receives on dfd from rank dpeer.
	plan         *plan
	sfd, dfd     int
	speer, dpeer int
	deadline     time.Time
	su, ru       int    // the send and receive units in progress
	out          []byte // the rest of send unit su, once loaded
	sendReady    bool   // out holds send unit su
	// Receive unit ru: its region [rlo, rhi) of plan.buf; reduce units are
	// read piece by piece into scratch and added when a piece is whole.
	rlo, rhi     int
	reduce, last bool
	recvReady    bool
	piece        []float32 // the piece being filled (buf or scratch)
	filled       int       // bytes of piece filled
	held         bool      // piece is full but may not be added yet (planExchange)
	hdrOut       []byte    // the rest of the operation's header to send
	added        int       // bytes of the peer's data added into the buffer (planExchange)
	hdrFilled    int       // header bytes received (of headerBytes, when any are due)
	idleSince    time.Time
}

// newPollLinks returns r's engine for TCP links, taking over their
// descriptors, or nil for other transports (the in-memory pipes of tests),
// which keep the goroutine path.
func newPollLinks(r *ring, next, prev net.Conn, pairs []net.Conn) *pollLinks {
	conns := append([]net.Conn{next, prev}, pairs...)
	fds := make([]int, 0, len(conns)+1)
	fail := func() *pollLinks {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		return nil
	}
	for _, c := range conns {
		tc, ok := c.(*net.TCPConn)
		if !ok {
			return fail()
		}
		fd, err := dupSocket(tc)
		if err != nil {
			return fail()
		}
		fds = append(fds, fd)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fail()
	}
	for _, c := range conns {
		_ = c.Close()
	}
	return &pollLinks{ring: r, wfd: fds[0], rfd: fds[1], pairs: fds[2:], efd: efd}
}

// dupSocket duplicates c's descriptor (non-blocking, like c's: the flag
// belongs to the shared open file).
func dupSocket(c *net.TCPConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := raw.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, cerr
	}
	return fd, err
}

// wake ends every wait in poll(2), now and later: the ring is dead (or
// closing), which the waiters check when they wake.
func (l *pollLinks) wake() {
	one := [8]byte{1}
	_, _ = unix.Write(l.efd, one[:])
}

// close releases the descriptors, once no goroutine uses them.
func (l *pollLinks) close() {
	_ = unix.Close(l.rfd)
	_ = unix.Close(l.wfd)
	for _, fd := range l.pairs {
		_ = unix.Close(fd)
	}
	_ = unix.Close(l.efd)
}

// readNotice blocks until rank r+1 sends an 8-byte notice on the reverse
// direction of next, the connection fails, or the ring dies.
func (l *pollLinks) readNotice(msg *[8]byte) error {
	got := 0
	for got < len(msg) {
		select {
		case <-l.ring.dead:
			return l.ring.failure()
		default:
		}
		n, err := unix.Read(l.wfd, msg[got:])
		switch {
		case n > 0:
			got += n
			continue
		case err == nil:
			return io.EOF
		case errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EAGAIN):
			return os.NewSyscallError("read", err)
		}
		l.noteFds[0] = unix.PollFd{Fd: int32(l.wfd), Events: unix.POLLIN}
		l.noteFds[1] = unix.PollFd{Fd: int32(l.efd), Events: unix.POLLIN}
		if _, err := unix.Poll(l.noteFds[:], -1); err != nil && !errors.Is(err, unix.EINTR) {
			return os.NewSyscallError("poll", err)
		}
	}
	return nil
}

// writeNotice sends an abort notice to rank r−1, giving it within: a peer
// that is gone must not hold up the ending.
func (l *pollLinks) writeNotice(msg []byte, within time.Duration) {
	end := time.Now().Add(within)
	var fds [1]unix.PollFd
	for len(msg) > 0 && time.Now().Before(end) {
		n, err := unix.Write(l.rfd, msg)
		if n > 0 {
			msg = msg[n:]
			continue
		}
		if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			return
		}
		fds[0] = unix.PollFd{Fd: int32(l.rfd), Events: unix.POLLOUT}
		_, _ = unix.Poll(fds[:], int(max(time.Until(end).Milliseconds(), 1)))
	}
}

// maxPollWait bounds one sleep in poll(2). Waits end early when a socket
// is ready or the ring dies (efd); the bound only keeps the millisecond
// count in range. Waits are long on purpose: a goroutine that re-enters a
// blocking system call every few ms keeps the runtime's sysmon thread
// waking every 20 µs to take its P, which cost a CPU-training worker 30 %
// of its step time.
const maxPollWait = time.Hour

// runPolled executes p until done, the deadline, or the ring's death: a
// planSteps one step after the other, each on its own link.
func (r *ring) runPolled(p *plan, deadline time.Time) error {
	if p.kind != planSteps {
		return r.poll.run(p, deadline)
	}
	for i := range p.steps {
		if err := r.poll.run(&p.steps[i], deadline); err != nil {
			return err
		}
	}
	return nil
}

// run executes one plan on its link.
func (l *pollLinks) run(p *plan, deadline time.Time) error {
	r := l.ring
	l.plan, l.deadline = p, deadline
	l.sfd, l.dfd, l.speer, l.dpeer = l.wfd, l.rfd, r.nextRank(), r.prevRank()
	if p.link > 0 {
		fd, peer := l.pairs[p.link-1], r.pairPeer(p.link)
		l.sfd, l.dfd, l.speer, l.dpeer = fd, fd, peer, peer
	}
	l.su, l.ru, l.sendReady, l.recvReady, l.held, l.idleSince = 0, 0, false, false, false, time.Time{}
	l.hdrOut, l.hdrFilled, l.added = nil, headerBytes, 0
	if p.sendUnits() > 0 {
		l.hdrOut = r.hdrOut[:]
	}
	if p.recvUnits() > 0 {
		l.hdrFilled = 0
	}
	err := l.progress()
	l.plan, l.out, l.piece, l.hdrOut = nil, nil, nil, nil
	return err
}

// progress advances the operation's send and receive units until done.
// Units keep the goroutine path's order and dependencies: send unit u waits
// for the receive units it forwards, and a receive unit that overwrites a
// region waits until that region has been sent.
func (l *pollLinks) progress() error {
	r, p := l.ring, l.plan
	nSend, nRecv := p.sendUnits(), p.recvUnits()
	for l.su < nSend || l.ru < nRecv || len(l.hdrOut) > 0 || l.hdrFilled < headerBytes {
		moved := false

		// Sends: the header, then the units in order. The header and the
		// first unit leave in one writev, a message's header and data in one
		// segment.
		for {
			if !l.sendReady && l.su < nSend {
				lo, hi, need := p.sendUnit(l.su)
				if l.ru >= need {
					l.out, l.sendReady = floatBytes(p.buf[lo:hi]), true
				}
			}
			if l.sendReady && len(l.out) == 0 && len(l.hdrOut) == 0 {
				l.su++
				l.sendReady = false
				continue
			}
			var out []byte
			if l.sendReady {
				out = l.out[:min(len(l.out), max(l.sendAhead(), 0))]
			}
			if len(l.hdrOut) == 0 && len(out) == 0 {
				break // nothing may go out yet
			}
			n, blocked, err := l.write(l.hdrOut, out)
			h := min(n, len(l.hdrOut))
			l.hdrOut, l.out = l.hdrOut[h:], l.out[n-h:]
			moved = moved || n > 0
			if err != nil {
				return err
			}
			if blocked {
				break
			}
		}

		// Receives: the header, then the units in order, the header and the
		// first piece in one readv.
		for l.ru < nRecv || l.hdrFilled < headerBytes {
			if !l.recvReady && l.ru < nRecv {
				if l.su < p.recvNeedsSent(l.ru) {
					break
				}
				l.rlo, l.rhi, l.reduce, l.last = p.recvUnit(l.ru)
				l.recvReady, l.piece, l.filled = true, nil, 0
			}
			if l.recvReady && l.piece == nil && l.rlo < l.rhi {
				if l.reduce {
					l.piece = r.scratch[:min(l.rhi-l.rlo, len(r.scratch))]
				} else {
					l.piece = p.buf[l.rlo:l.rhi]
				}
			}
			data := floatBytes(l.piece)[l.filled:]
			if l.hdrFilled < headerBytes || len(data) > 0 {
				hdr := r.hdrIn[l.hdrFilled:]
				n, err := l.read(hdr, data)
				if err != nil {
					return err
				}
				h := min(n, len(hdr))
				l.hdrFilled, l.filled = l.hdrFilled+h, l.filled+n-h
				if h > 0 && l.hdrFilled == headerBytes {
					if err := r.checkHeader(&r.hdrIn); err != nil {
						return err
					}
				}
				moved = moved || n > 0
				if l.hdrFilled < headerBytes || l.filled < 4*len(l.piece) {
					break // the rest has not arrived yet
				}
			}
			if !l.recvReady {
				break // the header alone was due
			}
			if l.piece != nil {
				if l.reduce {
					// In an exchange the piece's region of the buffer is also
					// going out: hold the piece (reading no further, so the
					// peer's sends can back up only as far as ours) until it has.
					l.held = p.kind == planExchange && l.sentBytes() < 4*(l.rlo+len(l.piece))
					if l.held {
						break
					}
					dst := p.buf[l.rlo : l.rlo+len(l.piece)]
					if l.last && p.op == OpAverage {
						addDiv(dst, l.piece, float32(r.size))
					} else {
						add(dst, l.piece)
					}
					l.added += 4 * len(l.piece)
				}
				l.rlo += len(l.piece)
				l.piece, l.filled = nil, 0
				if l.rlo < l.rhi {
					continue
				}
			}
			l.ru++
			l.recvReady = false
		}

		if moved {
			l.idleSince = time.Time{}
			continue
		}
		if err := l.idle(); err != nil {
			return err
		}
	}
	return nil
}

// rawIO is readv(2) or writev(2) of cnt iovecs at iov on a non-blocking
// socket without telling the Go scheduler: such a call never blocks, and
// announcing it (syscall.Read) lets the runtime hand this goroutine's P to
// another thread whenever a large copy takes longer than its 20 µs tick — a
// thread wake-up and hand-back per chunk, measured at several futex calls
// per all-reduce.
func rawIO(trap uintptr, fd int, iov unsafe.Pointer, cnt int) (int, error) {
	n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(iov), uintptr(cnt))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// write sends what it can of hdr and then data in one system call and
// returns how much it sent; blocked says the socket took nothing more
// (EAGAIN).
func (l *pollLinks) write(hdr, data []byte) (sent int, blocked bool, err error) {
	for {
		n, err := l.transfer(syscall.SYS_WRITEV, l.sfd, hdr, data, sent)
		sent += n
		switch {
		case err == nil:
			return sent, false, nil
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.EAGAIN):
			return sent, true, nil
		default:
			r := l.ring
			return sent, true, r.linkError(l.speer, "sending to", os.NewSyscallError("writev", err))
		}
	}
}

// read receives what has arrived into hdr and then data in one system
// call and returns how much: 0 when nothing has arrived.
func (l *pollLinks) read(hdr, data []byte) (int, error) {
	r := l.ring
	for {
		n, err := l.transfer(syscall.SYS_READV, l.dfd, hdr, data, 0)
		switch {
		case n > 0:
			return n, nil
		case err == nil: // n == 0: the peer closed
			return 0, r.linkError(l.dpeer, "receiving from", io.EOF)
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.EAGAIN):
			return 0, nil
		default:
			return 0, r.linkError(l.dpeer, "receiving from", os.NewSyscallError("readv", err))
		}
	}
}

// transfer is readv(2) or writev(2) of hdr then data, skipping the first
// skip bytes, on a non-blocking socket.
func (l *pollLinks) transfer(trap uintptr, fd int, hdr, data []byte, skip int) (int, error) {
	h := min(skip, len(hdr))
	hdr, data = hdr[h:], data[skip-h:]
	iov := l.iov[:0]
	for _, b := range [2][]byte{hdr, data} {
		if len(b) > 0 {
			iov = append(iov, unix.Iovec{Base: &b[0]})
			iov[len(iov)-1].SetLen(len(b))
		}
	}
	if len(iov) == 0 {
		return 0, nil
	}
	return rawIO(trap, fd, unsafe.Pointer(&iov[0]), len(iov))
}

// sentBytes is how much of the buffer has gone out, for planExchange,
// whose sends run through it from the start.
func (l *pollLinks) sentBytes() int {
	if l.su == l.plan.sendUnits() {
		return 4 * len(l.plan.buf)
	}
	lo, hi, _ := l.plan.sendUnit(l.su)
	if !l.sendReady {
		return 4 * lo
	}
	return 4*hi - len(l.out)
}

// sendAhead is how many more bytes of an exchange may be written before
// the peer's data catches up: at most sendWindow ahead of what has been
// added. Unbounded, the kernel's socket buffers grow to several MiB per
// connection on loopback, so a region is added to only after megabytes of
// other traffic have evicted it from the cache, and both the buffer and
// the socket buffers make extra trips to memory. Measured at 2 ranks
// (busbw GB/s, interleaved runs): 16 MiB 2.1–2.3 unbounded against
// 3.2–4.1 with a 512–768 KiB window, and 1.1 against 1.4–1.5 while the VM
// ran slow; 64 MiB likewise. (For rings of three or more, on this 2-core
// machine necessarily oversubscribed, a window only added context
// switches, so they run unbounded.) The window must exceed recvPiece: a
// piece is added only once its region has gone out.
func (l *pollLinks) sendAhead() int {
	if l.plan.kind != planExchange {
		return len(l.out)
	}
	return l.added + sendWindow - l.sentBytes()
}

// reading says whether progress waits for data from rank r−1.
func (l *pollLinks) reading() bool {
	return l.hdrFilled < headerBytes || (l.recvReady && !l.held)
}

// idle is one round of waiting when neither socket moved: a yield of the
// CPU while the spin budget lasts, then poll(2) on the sockets progress
// waits for and on efd, which an abort from another goroutine writes.
func (l *pollLinks) idle() error {
	r := l.ring
	select {
	case <-r.dead:
		return r.failure()
	default:
	}
	now := time.Now()
	reading, writing := l.reading(), l.sendReady || len(l.hdrOut) > 0
	if now.After(l.deadline) {
		// Waiting to receive means rank r−1 is silent; otherwise rank r+1
		// stopped draining our sends.
		if reading {
			return r.linkError(l.dpeer, "receiving from", os.ErrDeadlineExceeded)
		}
		return r.linkError(l.speer, "sending to", os.ErrDeadlineExceeded)
	}
	if l.idleSince.IsZero() {
		l.idleSince = now
	}
	if now.Sub(l.idleSince) < r.opts.SpinWait {
		_, _, _ = syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
		return nil
	}
	set := append(l.fds[:0], unix.PollFd{Fd: int32(l.efd), Events: unix.POLLIN})
	if reading {
		set = append(set, unix.PollFd{Fd: int32(l.dfd), Events: unix.POLLIN})
	}
	if writing {
		set = append(set, unix.PollFd{Fd: int32(l.sfd), Events: unix.POLLOUT})
	}
	wait := min(l.deadline.Sub(now), maxPollWait)
	if _, err := unix.Poll(set, int(max(wait.Milliseconds(), 1))); err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("collective: poll: %w", err)
	}
	return nil
}
