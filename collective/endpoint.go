package collective

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// Handshake limits.
const (
	// helloTimeout bounds reading a dialer's hello after it connects.
	helloTimeout = 10 * time.Second
	// holdTimeout is how long a hello for a generation this endpoint has not
	// joined yet is kept waiting for that Join before it is refused. Peers
	// receive their assignments at slightly different times.
	holdTimeout = 2 * DefaultJoinTimeout
	// maxJobIDLen bounds the job id on the wire.
	maxJobIDLen = 1024
)

// Endpoint is a worker's long-lived collective address. It listens once, is
// advertised to the coordinator, and forms one ring per generation (Join).
//
// Join may be called again after the previous generation's communicator is
// closed; only one Join runs at a time. Addr and Close are safe to call
// concurrently with anything.
type Endpoint struct {
	layer StreamLayer
	log   *slog.Logger
	wg    sync.WaitGroup // the accept loop and handshake goroutines

	mu      sync.Mutex // protects the fields below
	closed  bool
	joining *joinSlot         // the Join in progress, or nil
	latest  map[string]uint64 // the newest generation joined, per job
	held    []*pendingConn    // hellos waiting for a Join of their generation
}

// pendingConn is an accepted connection whose hello has been read.
type pendingConn struct {
	conn  net.Conn
	hello hello
	timer *time.Timer // refuses the conn if no Join claims it in time
}

// joinSlot is a Join waiting for its previous rank to connect.
type joinSlot struct {
	jobID      string
	generation uint64
	arrived    chan *pendingConn // hellos of this job and generation
}

// Listen starts a TCP endpoint on addr ("host:port"; port 0 picks a free
// port). Listen on the address peers will dial, not 0.0.0.0, since Addr is
// what gets advertised.
func Listen(ctx context.Context, addr string) (*Endpoint, error) {
	layer, err := ListenTCP(ctx, addr)
	if err != nil {
		return nil, err
	}
	return NewEndpoint(layer, nil), nil
}

// NewEndpoint serves Joins over any StreamLayer (e.g. a Network's in tests).
// The endpoint owns layer and closes it on Close. logger may be nil.
func NewEndpoint(layer StreamLayer, logger *slog.Logger) *Endpoint {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Endpoint{layer: layer, log: logger, latest: make(map[string]uint64)}
	e.wg.Add(1)
	go e.acceptLoop()
	return e
}

// Addr is the address peers dial: what the worker advertises.
func (e *Endpoint) Addr() string { return e.layer.Addr().String() }

// Close stops listening and refuses held connections. Communicators already
// joined keep working until closed themselves.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	held := e.held
	e.held = nil
	e.mu.Unlock()
	err := e.layer.Close()
	for _, pc := range held {
		pc.refuse("endpoint closed")
	}
	e.wg.Wait()
	return err
}

func (e *Endpoint) acceptLoop() {
	defer e.wg.Done()
	for {
		conn, err := e.layer.Accept()
		if err != nil {
			e.mu.Lock()
			closed := e.closed
			e.mu.Unlock()
			if !closed {
				e.log.Error("collective: accept failed; endpoint stops accepting", "err", err)
			}
			return
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.handshake(conn)
		}()
	}
}

// handshake reads a dialer's hello and routes it to the matching Join.
func (e *Endpoint) handshake(conn net.Conn) {
	_ = conn.SetDeadline(time.Now().Add(helloTimeout))
	h, err := readHello(conn)
	if err != nil {
		e.log.Warn("collective: bad hello", "remote", conn.RemoteAddr(), "err", err)
		_ = conn.Close()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	pc := &pendingConn{conn: conn, hello: h}
	if reason := e.route(pc); reason != "" {
		pc.refuse(reason)
	}
}

// route hands pc to the running Join of its generation, or holds it for a
// Join to come, or returns why it is refused.
func (e *Endpoint) route(pc *pendingConn) (refusal string) {
	h := pc.hello
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return "endpoint closed"
	case e.joining != nil && h.jobID == e.joining.jobID && h.generation == e.joining.generation:
		select {
		case e.joining.arrived <- pc:
			return ""
		default:
			return "too many connections for this generation"
		}
	case e.joining != nil && (h.jobID != e.joining.jobID || h.generation < e.joining.generation):
		return fmt.Sprintf("this endpoint is joining job %q generation %d, not job %q generation %d",
			e.joining.jobID, e.joining.generation, h.jobID, h.generation)
	case h.generation < e.latest[h.jobID]:
		return fmt.Sprintf("job %q is at generation %d here, not generation %d", h.jobID, e.latest[h.jobID], h.generation)
	}
	// A newer generation, or no Join yet: the peer got its assignment before
	// us. Hold it until our Join for that generation arrives.
	pc.timer = time.AfterFunc(holdTimeout, func() { e.expire(pc) })
	e.held = append(e.held, pc)
	return ""
}

// expire refuses a held connection that no Join claimed.
func (e *Endpoint) expire(pc *pendingConn) {
	e.mu.Lock()
	for i, q := range e.held {
		if q == pc {
			e.held = append(e.held[:i], e.held[i+1:]...)
			e.mu.Unlock()
			pc.refuse(fmt.Sprintf("no join for job %q generation %d within %v", pc.hello.jobID, pc.hello.generation, holdTimeout))
			return
		}
	}
	e.mu.Unlock()
}

// Join forms the ring of one generation: it dials rank+1, accepts rank−1
// (refusing peers of another job or generation), in a world of 2^m ≥ 4
// ranks also connects to rank r XOR 2^k for every k < m, and returns the
// communicator. It returns by opts.JoinTimeout or ctx's deadline. A world of
// one needs no connections.
func (e *Endpoint) Join(ctx context.Context, rv Rendezvous, opts Options) (Communicator, error) {
	if err := rv.Validate(); err != nil {
		return nil, err
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if rv.WorldSize == 1 {
		return newRing(rv, opts, nil, nil, nil), nil
	}
	ctx, cancel := context.WithTimeout(ctx, opts.JoinTimeout)
	defer cancel()

	slot := &joinSlot{jobID: rv.JobID, generation: rv.Generation, arrived: make(chan *pendingConn, 16)}
	if err := e.startJoin(slot); err != nil {
		return nil, err
	}
	defer e.endJoin(slot)

	// Connections: the ring's (link 0: dial rank+1, accept rank−1) and, in
	// a world of 2^m ≥ 4 ranks, one pair link per distance d = 2^k to rank
	// r XOR d (link k+1; the lower rank dials), for recursive doubling and
	// halving (halving.go).
	next := (rv.Rank + 1) % rv.WorldSize
	prev := (rv.Rank + rv.WorldSize - 1) % rv.WorldSize
	links := 1 + len(pairDistances(rv.WorldSize))
	conns := make([]net.Conn, 2*links) // [2k]: dialed (k = 0: next), [2k+1]: accepted (k = 0: prev)
	type dialed struct {
		slot int
		conn net.Conn
		err  error
	}
	dialDone := make(chan dialed, links)
	dialing := 0
	dial := func(slot, peer, link int) {
		dialing++
		go func() {
			c, err := e.dialPeer(ctx, rv, peer, link)
			dialDone <- dialed{slot, c, err}
		}()
	}
	dial(0, next, 0)
	want := 2 // connections still to come
	for k, d := range pairDistances(rv.WorldSize) {
		if p := rv.Rank ^ d; rv.Rank < p {
			dial(2*(k+1), p, k+1)
		}
		want++
	}

	var joinErr error
	for want > 0 && joinErr == nil {
		select {
		case d := <-dialDone:
			dialing--
			conns[d.slot], joinErr = d.conn, d.err
			want--
		case pc := <-slot.arrived:
			h := pc.hello
			at, refusal := acceptSlot(rv, h, prev, conns)
			if refusal != "" {
				pc.refuse(refusal)
				continue
			}
			if err := writeReply(pc.conn, ""); err != nil {
				_ = pc.conn.Close()
				joinErr = fmt.Errorf("collective: accepting rank %d: %w", h.rank, err)
				continue
			}
			conns[at] = pc.conn
			want--
		case <-ctx.Done():
			joinErr = fmt.Errorf("collective: join of job %q generation %d as rank %d/%d: %s did not connect within the join timeout: %w",
				rv.JobID, rv.Generation, rv.Rank, rv.WorldSize, missingPeers(rv, prev, conns), ctx.Err())
		}
	}
	if joinErr != nil {
		cancel()
		for ; dialing > 0; dialing-- {
			if d := <-dialDone; d.conn != nil {
				_ = d.conn.Close()
			}
		}
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
		return nil, joinErr
	}
	for _, c := range conns {
		if c != nil {
			_ = c.SetDeadline(time.Time{})
		}
	}
	pairs := make([]net.Conn, links-1)
	for k := range pairs {
		pairs[k] = conns[2*(k+1)]
		if pairs[k] == nil {
			pairs[k] = conns[2*(k+1)+1]
		}
	}
	opts.Logger.Info("collective: joined", "job", rv.JobID, "generation", rv.Generation, "rank", rv.Rank, "world", rv.WorldSize)
	return newRing(rv, opts, conns[0], conns[1], pairs), nil
}

// acceptSlot checks an arriving hello against the connections rank rv.Rank
// accepts and returns its slot in conns (see Join), or why it is refused.
func acceptSlot(rv Rendezvous, h hello, prev int, conns []net.Conn) (int, string) {
	if h.worldSize != rv.WorldSize {
		return 0, fmt.Sprintf("world size %d differs from this rank's %d", h.worldSize, rv.WorldSize)
	}
	slot := 1
	if h.link == 0 {
		if h.rank != prev {
			return 0, fmt.Sprintf("rank %d dialed rank %d, but only rank %d (its predecessor) may", h.rank, rv.Rank, prev)
		}
	} else {
		ds := pairDistances(rv.WorldSize)
		if h.link > len(ds) || h.rank != rv.Rank^ds[h.link-1] || h.rank > rv.Rank {
			return 0, fmt.Sprintf("rank %d dialed rank %d on pair link %d, which joins other ranks", h.rank, rv.Rank, h.link)
		}
		slot = 2*h.link + 1
	}
	if conns[slot] != nil {
		return 0, fmt.Sprintf("rank %d already connected", h.rank)
	}
	return slot, ""
}

// missingPeers names the ranks whose connections Join still waits for.
func missingPeers(rv Rendezvous, prev int, conns []net.Conn) string {
	var names []string
	if conns[1] == nil {
		names = append(names, fmt.Sprintf("rank %d (%s)", prev, rv.Addrs[prev]))
	}
	if conns[0] == nil {
		next := (rv.Rank + 1) % rv.WorldSize
		names = append(names, fmt.Sprintf("rank %d (%s)", next, rv.Addrs[next]))
	}
	for k, d := range pairDistances(rv.WorldSize) {
		if conns[2*(k+1)] == nil && conns[2*(k+1)+1] == nil {
			p := rv.Rank ^ d
			names = append(names, fmt.Sprintf("rank %d (%s)", p, rv.Addrs[p]))
		}
	}
	return strings.Join(names, ", ")
}

// startJoin installs slot as the running Join and hands it the held
// connections of its generation, refusing held ones that are now stale.
func (e *Endpoint) startJoin(slot *joinSlot) error {
	var stale []*pendingConn
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errors.New("collective: join on a closed endpoint")
	}
	if e.joining != nil {
		e.mu.Unlock()
		return fmt.Errorf("collective: join of generation %d while generation %d is still joining", slot.generation, e.joining.generation)
	}
	e.joining = slot
	e.latest[slot.jobID] = max(e.latest[slot.jobID], slot.generation)
	kept := e.held[:0]
	for _, pc := range e.held {
		h := pc.hello
		switch {
		case h.jobID == slot.jobID && h.generation == slot.generation:
			pc.timer.Stop()
			slot.arrived <- pc
		case h.jobID != slot.jobID || h.generation < slot.generation:
			pc.timer.Stop()
			stale = append(stale, pc)
		default:
			kept = append(kept, pc)
		}
	}
	e.held = kept
	e.mu.Unlock()
	for _, pc := range stale {
		pc.refuse(fmt.Sprintf("this endpoint is joining job %q generation %d, not job %q generation %d",
			slot.jobID, slot.generation, pc.hello.jobID, pc.hello.generation))
	}
	return nil
}

// endJoin removes slot and refuses connections that arrived too late.
func (e *Endpoint) endJoin(slot *joinSlot) {
	e.mu.Lock()
	e.joining = nil
	e.mu.Unlock()
	for {
		select {
		case pc := <-slot.arrived:
			pc.refuse(fmt.Sprintf("generation %d has already formed its ring", slot.generation))
		default:
			return
		}
	}
}

// dialPeer connects to rank peer for link and completes the handshake,
// retrying while the peer is not listening yet.
func (e *Endpoint) dialPeer(ctx context.Context, rv Rendezvous, peer, link int) (net.Conn, error) {
	addr := rv.Addrs[peer]
	backoff := 20 * time.Millisecond
	for {
		conn, err := e.layer.Dial(ctx, addr)
		if err == nil {
			return handshakePeer(ctx, conn, rv, peer, link)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("collective: join: dialing rank %d (%s): %w (last error: %v)", peer, addr, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// handshakePeer sends our hello on a fresh connection to rank next for
// link and waits for its verdict, which comes once next's Join for this
// generation runs.
func handshakePeer(ctx context.Context, conn net.Conn, rv Rendezvous, next, link int) (net.Conn, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	h := hello{jobID: rv.JobID, generation: rv.Generation, rank: rv.Rank, worldSize: rv.WorldSize, link: link}
	if err := writeHello(conn, h); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("collective: join: sending hello to rank %d (%s): %w", next, rv.Addrs[next], err)
	}
	refusal, err := readReply(conn)
	if err != nil {
		_ = conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("collective: join: waiting for rank %d (%s) to accept: %w", next, rv.Addrs[next], err)
	}
	if refusal != "" {
		_ = conn.Close()
		return nil, fmt.Errorf("collective: join: rank %d (%s) refused job %q generation %d: %s", next, rv.Addrs[next], rv.JobID, rv.Generation, refusal)
	}
	return conn, nil
}

// refuse tells the dialer why and closes the connection.
func (pc *pendingConn) refuse(reason string) {
	_ = pc.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeReply(pc.conn, reason)
	_ = pc.conn.Close()
}

// hello is the first message on a ring connection, dialer to acceptor.
type hello struct {
	jobID      string
	generation uint64
	rank       int
	worldSize  int
	link       int // 0: the ring; k ≥ 1: the pair link of distance 2^(k−1)
}

var helloMagic = [4]byte{'F', 'M', 'C', 'L'}

// protocolVersion 2 added the link and the pair links.
const protocolVersion = 2

// writeHello encodes: magic[4] version u16 rank u32 world u32 generation u64
// link u16 joblen u16 job[joblen], little-endian.
func writeHello(w io.Writer, h hello) error {
	if len(h.jobID) > maxJobIDLen {
		return fmt.Errorf("job id of %d bytes exceeds %d", len(h.jobID), maxJobIDLen)
	}
	b := make([]byte, 0, helloFixed+len(h.jobID))
	b = append(b, helloMagic[:]...)
	b = binary.LittleEndian.AppendUint16(b, protocolVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(h.rank))
	b = binary.LittleEndian.AppendUint32(b, uint32(h.worldSize))
	b = binary.LittleEndian.AppendUint64(b, h.generation)
	b = binary.LittleEndian.AppendUint16(b, uint16(h.link))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h.jobID)))
	b = append(b, h.jobID...)
	_, err := w.Write(b)
	return err
}

// helloFixed is the length of a hello before its job id.
const helloFixed = 26

func readHello(r io.Reader) (hello, error) {
	var fixed [helloFixed]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return hello{}, fmt.Errorf("reading hello: %w", err)
	}
	if [4]byte(fixed[:4]) != helloMagic {
		return hello{}, fmt.Errorf("not an fmtrain collective peer (magic %q)", fixed[:4])
	}
	if v := binary.LittleEndian.Uint16(fixed[4:]); v != protocolVersion {
		return hello{}, fmt.Errorf("protocol version %d, want %d", v, protocolVersion)
	}
	h := hello{
		rank:       int(binary.LittleEndian.Uint32(fixed[6:])),
		worldSize:  int(binary.LittleEndian.Uint32(fixed[10:])),
		generation: binary.LittleEndian.Uint64(fixed[14:]),
		link:       int(binary.LittleEndian.Uint16(fixed[22:])),
	}
	n := int(binary.LittleEndian.Uint16(fixed[24:]))
	if n > maxJobIDLen {
		return hello{}, fmt.Errorf("job id of %d bytes exceeds %d", n, maxJobIDLen)
	}
	job := make([]byte, n)
	if _, err := io.ReadFull(r, job); err != nil {
		return hello{}, fmt.Errorf("reading hello job id: %w", err)
	}
	h.jobID = string(job)
	return h, nil
}

// writeReply encodes the acceptor's verdict: len u16 then the refusal
// reason; an empty reason accepts.
func writeReply(w io.Writer, refusal string) error {
	if len(refusal) > 4096 {
		refusal = refusal[:4096]
	}
	b := binary.LittleEndian.AppendUint16(make([]byte, 0, 2+len(refusal)), uint16(len(refusal)))
	_, err := w.Write(append(b, refusal...))
	return err
}

func readReply(r io.Reader) (string, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", err
	}
	msg := make([]byte, binary.LittleEndian.Uint16(n[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return "", err
	}
	return string(msg), nil
}
