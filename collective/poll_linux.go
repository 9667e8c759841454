package collective

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pollLinks is the ring's pair of TCP sockets driven by non-blocking system
// calls from one goroutine: a progress engine in the manner of MPI's. Every
// operation runs on the caller's goroutine: it writes to rank r+1 and reads
// from rank r−1 whatever each socket takes or holds, reduces what arrived,
// and only when neither moves does it poll the sockets for a while
// (yielding the CPU between polls) and then wait for them.
//
// Compared with a sender goroutine and blocking reads this saves, per ring
// step, the hand-offs between goroutines, which on a VM cost tens of µs
// each and dominate small and mid-sized all-reduces.
type pollLinks struct {
	ring       *ring
	prev, next syscall.RawConn
	fds        [2]unix.PollFd // poll(2)'s set, kept here so waiting allocates nothing

	// The running operation. The RawConn callbacks read and advance it;
	// they are bound once so that an operation allocates nothing.
	plan      *plan
	deadline  time.Time
	err       error
	want      int // what the last progress round stopped for (wantRead…)
	rfd       int
	su, ru    int    // the send and receive units in progress
	out       []byte // the rest of send unit su, once loaded
	sendReady bool   // out holds send unit su
	// Receive unit ru: its region [rlo, rhi) of plan.buf; reduce units are
	// read piece by piece into scratch and added when a piece is whole.
	rlo, rhi     int
	reduce, last bool
	recvReady    bool
	piece        []float32 // the piece being filled (buf or scratch)
	filled       int       // bytes of piece filled
	held         bool      // piece is full but may not be added yet (planExchange)
	hdrOut       []byte    // the rest of the operation's header to send
	hdrFilled    int       // header bytes received (of headerBytes, when any are due)
	idleSince    time.Time

	onPrev, onNext          func(fd uintptr) bool
	waitRead, waitWrite     func(fd uintptr) bool
	waitedRead, waitedWrite bool
}

// What a progress round stopped for.
const (
	wantNothing = iota // the operation is done
	wantRead           // only data from rank r−1 lets it go on
	wantWrite          // only room towards rank r+1 lets it go on
)

// newPollLinks returns r's engine for TCP links, or nil for other
// transports (the in-memory pipes of tests), which use the goroutine path.
func newPollLinks(r *ring, next, prev net.Conn) *pollLinks {
	n, ok1 := next.(*net.TCPConn)
	p, ok2 := prev.(*net.TCPConn)
	if !ok1 || !ok2 {
		return nil
	}
	nr, err1 := n.SyscallConn()
	pr, err2 := p.SyscallConn()
	if err1 != nil || err2 != nil {
		return nil
	}
	l := &pollLinks{ring: r, prev: pr, next: nr}
	l.onPrev = func(rfd uintptr) bool {
		l.rfd = int(rfd)
		if l.su == l.plan.sendUnits() {
			// Nothing left to send: do not claim next, whose write side
			// may be shut already (rank r+1 closed once it had our data).
			l.err = l.progress(l.rfd, -1)
			return true
		}
		if err := l.next.Write(l.onNext); err != nil && l.err == nil {
			l.err = r.linkError(r.nextRank(), "sending to", err)
		}
		return true
	}
	l.onNext = func(wfd uintptr) bool {
		l.err = l.progress(l.rfd, int(wfd))
		return true
	}
	// The waits run after RawConn has armed the netpoller, so checking
	// readiness once more first cannot miss an event that came before.
	l.waitRead = func(fd uintptr) bool {
		if l.waitedRead {
			return true
		}
		l.waitedRead = true
		return l.ready(int(fd), unix.POLLIN)
	}
	l.waitWrite = func(fd uintptr) bool {
		if l.waitedWrite {
			return true
		}
		l.waitedWrite = true
		return l.ready(int(fd), unix.POLLOUT)
	}
	return l
}

// ready polls fd without waiting: is it ready for events (or failed)?
func (l *pollLinks) ready(fd int, events int16) bool {
	l.fds[0] = unix.PollFd{Fd: int32(fd), Events: events}
	n, err := unix.Poll(l.fds[:1], 0)
	return err != nil || n > 0
}

// runPolled executes p until done, the deadline, or the ring's death. The
// sockets' descriptors are held (RawConn.Read/Write) while a round runs, so
// a concurrent Close cannot reuse them under it: Close aborts first, which
// ends the round, and waits for the descriptors.
//
// A round runs until the operation is done or nothing has moved for the
// spin budget. Then it waits in Go's netpoller for the one socket it needs
// (the deadlines set by run, or an abort's past deadlines, end that wait),
// or in poll(2) when it needs either socket.
func (r *ring) runPolled(p *plan, deadline time.Time) error {
	l := r.poll
	l.plan, l.deadline, l.err = p, deadline, nil
	l.su, l.ru, l.sendReady, l.recvReady, l.held, l.idleSince = 0, 0, false, false, false, time.Time{}
	l.hdrOut, l.hdrFilled = nil, headerBytes
	if p.sendUnits() > 0 {
		l.hdrOut = r.hdrOut[:]
	}
	if p.recvUnits() > 0 {
		l.hdrFilled = 0
	}
	defer func() { l.plan, l.out, l.piece, l.hdrOut = nil, nil, nil, nil }()
	for {
		if err := l.prev.Read(l.onPrev); err != nil && l.err == nil {
			return r.linkError(r.prevRank(), "receiving from", err)
		}
		if l.err != nil {
			return l.err
		}
		switch l.want {
		case wantNothing:
			return nil
		case wantRead:
			l.waitedRead = false
			if err := l.prev.Read(l.waitRead); err != nil {
				return r.linkError(r.prevRank(), "receiving from", err)
			}
		case wantWrite:
			l.waitedWrite = false
			if err := l.next.Write(l.waitWrite); err != nil {
				return r.linkError(r.nextRank(), "sending to", err)
			}
		}
		l.idleSince = time.Time{}
	}
}

// progress advances the operation's send and receive units. Units keep the
// goroutine path's order and dependencies: send unit u waits for the
// receive units it forwards, and a receive unit that overwrites a region
// waits until that region has been sent.
func (l *pollLinks) progress(rfd, wfd int) error {
	r, p := l.ring, l.plan
	nSend, nRecv := p.sendUnits(), p.recvUnits()
	for l.su < nSend || l.ru < nRecv {
		moved := false

		for len(l.hdrOut) > 0 {
			m, blocked, err := l.write(wfd, &l.hdrOut)
			moved = moved || m
			if err != nil {
				return err
			}
			if blocked {
				break
			}
		}
		for l.su < nSend && len(l.hdrOut) == 0 {
			if !l.sendReady {
				lo, hi, need := p.sendUnit(l.su)
				if l.ru < need {
					break
				}
				l.out, l.sendReady = floatBytes(p.buf[lo:hi]), true
			}
			if len(l.out) > 0 {
				m, blocked, err := l.write(wfd, &l.out)
				moved = moved || m
				if err != nil {
					return err
				}
				if blocked {
					break
				}
				if len(l.out) > 0 {
					continue
				}
			}
			l.su++
			l.sendReady = false
		}

		if l.hdrFilled < headerBytes {
			m, err := l.read(rfd, r.hdrIn[:], &l.hdrFilled)
			moved = moved || m
			if err != nil {
				return err
			}
			if l.hdrFilled == headerBytes {
				if err := r.checkHeader(&r.hdrIn); err != nil {
					return err
				}
			}
		}
		for l.ru < nRecv && l.hdrFilled == headerBytes {
			if !l.recvReady {
				if l.su < p.recvNeedsSent(l.ru) {
					break
				}
				l.rlo, l.rhi, l.reduce, l.last = p.recvUnit(l.ru)
				l.recvReady, l.piece, l.filled = true, nil, 0
			}
			if l.piece == nil && l.rlo < l.rhi {
				if l.reduce {
					l.piece = r.scratch[:min(l.rhi-l.rlo, len(r.scratch))]
				} else {
					l.piece = p.buf[l.rlo:l.rhi]
				}
			}
			if l.piece != nil {
				b := floatBytes(l.piece)
				if l.filled < len(b) {
					m, err := l.read(rfd, b, &l.filled)
					moved = moved || m
					if err != nil {
						return err
					}
					if l.filled < len(b) {
						break
					}
				}
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
		stop, err := l.idle(rfd, wfd)
		if err != nil || stop {
			return err
		}
	}
	l.want = wantNothing
	return nil
}

// write sends what it can of *out, advancing it; blocked says the socket
// took nothing more (EAGAIN).
func (l *pollLinks) write(fd int, out *[]byte) (moved, blocked bool, err error) {
	for {
		n, err := syscall.Write(fd, *out)
		if n > 0 {
			*out, moved = (*out)[n:], true
		}
		switch {
		case err == nil:
			return moved, false, nil
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.EAGAIN):
			return moved, true, nil
		default:
			r := l.ring
			return moved, true, r.linkError(r.nextRank(), "sending to", os.NewSyscallError("write", err))
		}
	}
}

// read receives what has arrived into b[*filled:], advancing *filled.
func (l *pollLinks) read(fd int, b []byte, filled *int) (moved bool, err error) {
	r := l.ring
	for {
		n, err := syscall.Read(fd, b[*filled:])
		switch {
		case n > 0:
			*filled += n
			return true, nil
		case err == nil: // n == 0: the peer closed
			return false, r.linkError(r.prevRank(), "receiving from", io.EOF)
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.EAGAIN):
			return false, nil
		default:
			return false, r.linkError(r.prevRank(), "receiving from", os.NewSyscallError("read", err))
		}
	}
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

// reading says whether progress waits for data from rank r−1.
func (l *pollLinks) reading() bool {
	return l.hdrFilled < headerBytes || (l.recvReady && !l.held)
}

// idle is one round of waiting when neither socket moved: a yield of the
// CPU while the spin budget lasts. Past it, progress stops (stop) to wait
// in the netpoller for the one socket it needs, or, when it needs either,
// polls both here, up to maxPollWait so that an abort (r.dead) is seen.
func (l *pollLinks) idle(rfd, wfd int) (stop bool, err error) {
	r := l.ring
	select {
	case <-r.dead:
		return true, r.failure()
	default:
	}
	now := time.Now()
	if now.After(l.deadline) {
		// Waiting to receive means rank r−1 is silent; otherwise rank r+1
		// stopped draining our sends.
		if l.reading() {
			return true, r.linkError(r.prevRank(), "receiving from", os.ErrDeadlineExceeded)
		}
		return true, r.linkError(r.nextRank(), "sending to", os.ErrDeadlineExceeded)
	}
	if l.idleSince.IsZero() {
		l.idleSince = now
	}
	if now.Sub(l.idleSince) < r.opts.SpinWait {
		_, _, _ = syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
		return false, nil
	}
	reading, writing := l.reading(), l.sendReady || len(l.hdrOut) > 0
	switch {
	case reading && !writing:
		l.want = wantRead
		return true, nil
	case writing && !reading:
		l.want = wantWrite
		return true, nil
	}
	l.fds[0] = unix.PollFd{Fd: int32(rfd), Events: unix.POLLIN}
	l.fds[1] = unix.PollFd{Fd: int32(wfd), Events: unix.POLLOUT}
	wait := min(l.deadline.Sub(now), maxPollWait)
	if _, err := unix.Poll(l.fds[:], int(max(wait.Milliseconds(), 1))); err != nil && !errors.Is(err, unix.EINTR) {
		return true, fmt.Errorf("collective: poll: %w", err)
	}
	return false, nil
}

// maxPollWait bounds one wait in poll(2), so an abort from another
// goroutine (which closes r.dead) is seen within it.
const maxPollWait = 10 * time.Millisecond
