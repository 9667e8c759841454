package collective

import (
	"context"
	"fmt"
	"net"
)

// StreamLayer is the seam between the ring and the network, shaped like
// hashicorp/raft's: a listener for the connections peers open to us, plus a
// dialer for the ones we open. TCP serves production (ListenTCP); the
// in-memory Network serves tests, and can cut a rank off mid-operation.
//
// Accept and Dial may be called concurrently. Conns must support deadlines
// and must unblock a pending Read or Write when closed.
type StreamLayer interface {
	net.Listener
	// Dial opens a connection to a peer's listener address. It must return
	// by ctx's deadline.
	Dial(ctx context.Context, addr string) (net.Conn, error)
}

// tcpLayer is the production StreamLayer.
type tcpLayer struct {
	*net.TCPListener
	dialer net.Dialer
}

var _ StreamLayer = (*tcpLayer)(nil)

// ListenTCP listens on a TCP address ("host:port"; port 0 picks one).
func ListenTCP(ctx context.Context, addr string) (StreamLayer, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("collective: listening on %q: %w", addr, err)
	}
	return &tcpLayer{TCPListener: l.(*net.TCPListener)}, nil
}

// Accept returns the next connection, with Nagle's algorithm off.
func (t *tcpLayer) Accept() (net.Conn, error) {
	c, err := t.TCPListener.AcceptTCP()
	if err != nil {
		return nil, err
	}
	tuneTCP(c)
	return c, nil
}

// Dial connects to addr.
func (t *tcpLayer) Dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tuneTCP(c.(*net.TCPConn))
	return c, nil
}

// tuneTCP sets what the ring needs from a socket. The socket buffer sizes
// are deliberately left alone: setting SO_SNDBUF/SO_RCVBUF turns off Linux's
// autotuning and caps them at net.core.[rw]mem_max, which is far smaller
// than what autotuning reaches on loopback or a fast LAN.
func tuneTCP(c *net.TCPConn) {
	_ = c.SetNoDelay(true)    // chunks must leave at once; we batch ourselves
	_ = c.SetKeepAlive(false) // liveness comes from operation deadlines
}
