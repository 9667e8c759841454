package collective

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// Network is an in-process StreamLayer fabric for tests, like
// hashicorp/raft's InmemTransport: endpoints listen on names, connections
// are synchronous pipes (net.Pipe, with deadlines), and Disconnect cuts a
// node off mid-operation as a crashed process would be.
//
// A Network is safe for concurrent use.
type Network struct {
	mu        sync.Mutex // protects the maps
	listeners map[string]*memLayer
	conns     map[string][]net.Conn // every pipe end that touches the named node
	cut       map[string]bool
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{
		listeners: make(map[string]*memLayer),
		conns:     make(map[string][]net.Conn),
		cut:       make(map[string]bool),
	}
}

// Listen registers a node under name, which is also its address.
func (n *Network) Listen(name string) (StreamLayer, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.listeners[name]; ok {
		return nil, fmt.Errorf("collective: in-memory address %q is in use", name)
	}
	l := &memLayer{net: n, name: name, accept: make(chan net.Conn), done: make(chan struct{})}
	n.listeners[name] = l
	return l, nil
}

// Disconnect closes every connection of the node name, both ends, and makes
// new dials to or from it fail: the node's peers see their reads and writes
// fail at once, as when a process dies.
func (n *Network) Disconnect(name string) {
	n.mu.Lock()
	conns := n.conns[name]
	delete(n.conns, name)
	n.cut[name] = true
	n.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

type memLayer struct {
	net    *Network
	name   string
	accept chan net.Conn
	done   chan struct{}
	once   sync.Once
}

var _ StreamLayer = (*memLayer)(nil)

func (l *memLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memLayer) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.net.mu.Lock()
		delete(l.net.listeners, l.name)
		l.net.mu.Unlock()
	})
	return nil
}

func (l *memLayer) Addr() net.Addr { return memAddr(l.name) }

func (l *memLayer) Dial(ctx context.Context, addr string) (net.Conn, error) {
	n := l.net
	n.mu.Lock()
	target, ok := n.listeners[addr]
	cut := n.cut[addr] || n.cut[l.name]
	n.mu.Unlock()
	if cut {
		return nil, fmt.Errorf("collective: in-memory dial %s → %s: %w", l.name, addr, errDisconnected)
	}
	if !ok {
		return nil, fmt.Errorf("collective: in-memory dial %s → %s: no listener", l.name, addr)
	}
	client, server := net.Pipe()
	n.mu.Lock()
	n.conns[l.name] = append(n.conns[l.name], client, server)
	n.conns[addr] = append(n.conns[addr], client, server)
	n.mu.Unlock()
	select {
	case target.accept <- server:
		return client, nil
	case <-target.done:
	case <-ctx.Done():
	}
	_ = client.Close()
	_ = server.Close()
	return nil, fmt.Errorf("collective: in-memory dial %s → %s: not accepted", l.name, addr)
}

var errDisconnected = errors.New("node disconnected")

type memAddr string

func (a memAddr) Network() string { return "inmem" }
func (a memAddr) String() string  { return string(a) }
