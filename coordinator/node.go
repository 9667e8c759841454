package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/core"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Peer is one voting replica of the raft group.
type Peer struct {
	ID string
	// RaftAddr is the host:port the other replicas dial (a DNS name is fine).
	RaftAddr string
}

// Options configures a Node. ID, Etcd and either DataDir or InMemory are
// required; everything else has a working default.
type Options struct {
	// ID is the replica's stable raft server id.
	ID string
	// DataDir holds the raft log (raft.db) and snapshots.
	DataDir string
	// InMemory keeps the raft log and snapshots in memory (tests only: a
	// restarted replica forgets everything).
	InMemory bool
	// RaftAddr is the raft listen address (default 127.0.0.1:0);
	// RaftAdvertise what peers dial (default: RaftAddr as bound).
	RaftAddr      string
	RaftAdvertise string
	// Transport replaces the TCP transport (tests: raft.InmemTransport).
	Transport raft.Transport
	// Peers is the static initial cluster, the same on every replica and
	// including this one; empty means a single-replica group.
	Peers []Peer
	// Join starts a replica that bootstraps nothing: it waits until the
	// group's leader adds it (POST /v1/raft/add-voter), to grow a group.
	Join bool
	// HTTPAddr is where the worker API, /healthz, /readyz and /metrics are
	// served (default 127.0.0.1:0; "-" serves nothing, for tests that call
	// Handler). HTTPAdvertise is the URL other replicas forward to
	// (default http://<bound address>).
	HTTPAddr      string
	HTTPAdvertise string
	// Etcd is the job queue (required). NATS carries job events (optional:
	// nil publishes nothing).
	Etcd *clientv3.Client
	NATS *nats.Conn
	// HeartbeatInterval is how often workers heartbeat (default 500 ms);
	// HeartbeatTimeout how long without one before a worker is lost
	// (default 5 s). ProgressInterval is the most often a job's step is
	// written to raft and etcd (default 1 s).
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	ProgressInterval  time.Duration
	// MaxRestarts is core.Config.MaxRestarts; every replica must use the same.
	MaxRestarts int
	// TuneRaft adjusts the raft configuration after the defaults are set
	// (tests shorten the timeouts).
	TuneRaft func(*raft.Config)
	// Logger receives the coordinator's logs; nil discards them.
	Logger *slog.Logger
}

// Defaults, in one place (fm-coordinator's flags show them).
const (
	DefaultHeartbeatInterval = 500 * time.Millisecond
	DefaultHeartbeatTimeout  = 5 * time.Second
	DefaultProgressInterval  = time.Second
	applyTimeout             = 10 * time.Second
)

func (o *Options) validate() error {
	switch {
	case o.ID == "":
		return errors.New("coordinator: Options.ID is empty (the replica's raft server id)")
	case o.Etcd == nil:
		return errors.New("coordinator: Options.Etcd is nil (the job queue's client)")
	case o.DataDir == "" && !o.InMemory:
		return errors.New("coordinator: Options.DataDir is empty (where the raft log and snapshots live)")
	}
	if o.RaftAddr == "" {
		o.RaftAddr = "127.0.0.1:0"
	}
	if o.HTTPAddr == "" {
		o.HTTPAddr = "127.0.0.1:0"
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.HeartbeatTimeout <= 0 {
		o.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if o.HeartbeatTimeout <= o.HeartbeatInterval {
		return fmt.Errorf("coordinator: heartbeat timeout (%v) must be longer than the heartbeat interval (%v)", o.HeartbeatTimeout, o.HeartbeatInterval)
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = DefaultProgressInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	seen := map[string]bool{}
	self := false
	for _, p := range o.Peers {
		if p.ID == "" || p.RaftAddr == "" {
			return fmt.Errorf("coordinator: peer %+v needs both an id and a raft address", p)
		}
		if seen[p.ID] {
			return fmt.Errorf("coordinator: peer id %q appears twice", p.ID)
		}
		seen[p.ID] = true
		self = self || p.ID == o.ID
	}
	if len(o.Peers) > 0 && !self {
		return fmt.Errorf("coordinator: this replica's id %q is not among the peers %v", o.ID, o.Peers)
	}
	return nil
}

// Node is one coordinator replica: a raft member whose FSM is core.State,
// the HTTP API, and (while it leads) the loop that watches etcd, tracks
// heartbeats and executes the state's actions.
//
// Call New, then Run until the context ends; Addr, Ready, IsLeader and
// Handler may be called from any goroutine.
type Node struct {
	opts Options
	log  *slog.Logger
	fsm  *fsm
	raft *raft.Raft

	closers  []io.Closer
	listener net.Listener // nil when HTTPAddr is "-"
	httpURL  string
	metrics  *metrics
	handler  http.Handler

	leaderReady atomic.Bool // leading, with the FSM caught up (Barrier)
	ready       chan struct{}
	readyOnce   sync.Once

	live atomic.Pointer[liveness] // leader memory; fresh on every leadership
}

// New builds the replica: raft storage, transport, the FSM, and the HTTP
// listener. It bootstraps the static cluster on a replica with no raft state.
func New(opts Options) (*Node, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	n := &Node{opts: opts, log: opts.Logger.With("coordinator", opts.ID), ready: make(chan struct{}),
		fsm: newFSM(core.Config{MaxRestarts: opts.MaxRestarts})}
	n.live.Store(newLiveness())
	if err := n.openRaft(); err != nil {
		n.closeAll()
		return nil, err
	}
	if opts.HTTPAddr != "-" {
		l, err := net.Listen("tcp", opts.HTTPAddr)
		if err != nil {
			n.closeAll()
			return nil, fmt.Errorf("coordinator: listening for HTTP on %s: %w", opts.HTTPAddr, err)
		}
		n.listener = l
		n.httpURL = "http://" + advertisable(l.Addr().(*net.TCPAddr))
	}
	if opts.HTTPAdvertise != "" {
		n.httpURL = strings.TrimRight(opts.HTTPAdvertise, "/")
	}
	n.metrics = newMetrics(n)
	n.handler = n.routes()
	return n, nil
}

func (n *Node) openRaft() error {
	o := n.opts
	cfg := raft.DefaultConfig()
	cfg.LocalID = raft.ServerID(o.ID)
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{n.log.With("component", "raft")}})
	if o.TuneRaft != nil {
		o.TuneRaft(cfg)
	}
	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if o.InMemory {
		store := raft.NewInmemStore()
		logs, stable, snaps = store, store, raft.NewInmemSnapshotStore()
	} else {
		if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
			return fmt.Errorf("coordinator: creating data dir: %w", err)
		}
		bolt, err := raftboltdb.NewBoltStore(filepath.Join(o.DataDir, "raft.db"))
		if err != nil {
			return fmt.Errorf("coordinator: opening raft log %s: %w", filepath.Join(o.DataDir, "raft.db"), err)
		}
		n.closers = append(n.closers, bolt)
		cache, err := raft.NewLogCache(512, bolt)
		if err != nil {
			return fmt.Errorf("coordinator: raft log cache: %w", err)
		}
		logs, stable = cache, bolt
		fs, err := raft.NewFileSnapshotStore(o.DataDir, 2, slogWriter{n.log.With("component", "raft-snapshots")})
		if err != nil {
			return fmt.Errorf("coordinator: raft snapshot store in %s: %w", o.DataDir, err)
		}
		snaps = fs
	}
	trans := o.Transport
	if trans == nil {
		l, err := net.Listen("tcp", o.RaftAddr)
		if err != nil {
			return fmt.Errorf("coordinator: listening for raft on %s: %w", o.RaftAddr, err)
		}
		var adv net.Addr = l.Addr()
		if o.RaftAdvertise != "" {
			adv = stringAddr(o.RaftAdvertise)
		}
		nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: &tcpStream{Listener: l, advertise: adv}, MaxPool: 3, Timeout: 10 * time.Second,
			Logger: cfg.Logger.Named("net"),
		})
		n.closers = append(n.closers, nt)
		trans = nt
	}
	r, err := raft.NewRaft(cfg, n.fsm, logs, stable, snaps, trans)
	if err != nil {
		return fmt.Errorf("coordinator: starting raft: %w", err)
	}
	n.raft = r
	has, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return fmt.Errorf("coordinator: reading raft state: %w", err)
	}
	if !has && !o.Join {
		servers := []raft.Server{{ID: cfg.LocalID, Address: trans.LocalAddr()}}
		if len(o.Peers) > 0 {
			servers = servers[:0]
			for _, p := range o.Peers {
				servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
			}
		}
		// Every replica bootstraps the same configuration; raft accepts that.
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("coordinator: bootstrapping raft: %w", err)
		}
	}
	return nil
}

func (n *Node) closeAll() {
	if n.raft != nil {
		if err := n.raft.Shutdown().Error(); err != nil {
			n.log.Warn("raft shutdown", "err", err)
		}
	}
	for _, c := range n.closers {
		_ = c.Close()
	}
	if n.listener != nil {
		_ = n.listener.Close()
	}
}

// Addr is the URL of this replica's HTTP API ("" when it serves none).
func (n *Node) Addr() string { return n.httpURL }

// Handler is the HTTP API, for tests that serve it themselves.
func (n *Node) Handler() http.Handler { return n.handler }

// Ready is closed once this replica can serve the worker API: it leads with
// its state caught up, or it follows a leader whose address it knows.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// IsLeader reports whether this replica leads and has caught up.
func (n *Node) IsLeader() bool { return n.leaderReady.Load() }

// Raft is the replica's raft instance (tests, metrics).
func (n *Node) Raft() *raft.Raft { return n.raft }

// Run serves HTTP and runs the leader loop whenever this replica leads,
// until ctx ends; then it shuts everything down (a leader first hands
// leadership to another replica).
func (n *Node) Run(ctx context.Context) error {
	var srv *http.Server
	srvErr := make(chan error, 1)
	if n.listener != nil {
		srv = &http.Server{Handler: n.handler, ReadHeaderTimeout: 10 * time.Second}
		go func() { srvErr <- srv.Serve(n.listener) }()
	}
	defer n.shutdown(srv)

	var (
		leaderCancel context.CancelFunc
		leaderDone   chan struct{}
	)
	stopLeading := func() {
		if leaderCancel != nil {
			leaderCancel()
			<-leaderDone
			leaderCancel = nil
		}
	}
	defer stopLeading()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-srvErr:
			return fmt.Errorf("coordinator: HTTP server: %w", err)
		case <-n.raft.LeaderCh():
		case <-tick.C:
		}
		leading := n.raft.State() == raft.Leader
		if leading && leaderCancel == nil {
			var lctx context.Context
			lctx, leaderCancel = context.WithCancel(ctx)
			leaderDone = make(chan struct{})
			go func() {
				defer close(leaderDone)
				n.lead(lctx)
			}()
		}
		if !leading && leaderCancel != nil {
			n.log.Info("lost leadership")
			stopLeading()
		}
		if !leading {
			if _, id := n.raft.LeaderWithID(); id != "" && n.fsm.coordinatorHTTP(string(id)) != "" {
				n.markReady()
			}
		}
	}
}

func (n *Node) markReady() { n.readyOnce.Do(func() { close(n.ready) }) }

func (n *Node) shutdown(srv *http.Server) {
	if n.raft.State() == raft.Leader && len(n.opts.Peers) > 1 {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("leadership transfer before shutdown failed", "err", err)
		}
	}
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
	}
	n.closeAll()
}

// propose replicates ev and waits until this replica applied it.
func (n *Node) propose(ev core.Event) (applyResult, error) {
	data, err := core.EncodeEvent(ev)
	if err != nil {
		return applyResult{}, err
	}
	n.metrics.proposals.Inc()
	f := n.raft.Apply(data, applyTimeout)
	if err := f.Error(); err != nil {
		n.metrics.proposalErrors.Inc()
		return applyResult{}, fmt.Errorf("coordinator: replicating %T: %w", ev, err)
	}
	res, _ := f.Response().(applyResult)
	if res.err != nil {
		return res, res.err
	}
	return res, nil
}

// tcpStream is raft's StreamLayer over TCP with an advertised address that
// may be a DNS name (raft.NewTCPTransport insists on an IP).
type tcpStream struct {
	net.Listener
	advertise net.Addr
}

var _ raft.StreamLayer = (*tcpStream)(nil)

func (s *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

func (s *tcpStream) Addr() net.Addr { return s.advertise }

type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

// slogWriter turns each line a library writes into one slog record.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	for line := range strings.SplitSeq(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			w.l.Warn(line)
		}
	}
	return len(p), nil
}

// advertisable is addr as another host can dial it: an unspecified IP
// (0.0.0.0, ::) is replaced by the host name.
func advertisable(addr *net.TCPAddr) string {
	if addr.IP.IsUnspecified() {
		if host, err := os.Hostname(); err == nil {
			return net.JoinHostPort(host, strconv.Itoa(addr.Port))
		}
	}
	return addr.String()
}
