package local

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fmtrain/fmtrain/coordinator"
)

// coordinatorProc is the cluster's coordinator: one raft replica running
// in this process.
type coordinatorProc struct {
	url    string
	cancel context.CancelFunc
	done   chan error
}

// startCoordinator starts a single-replica coordinator on the cluster's
// etcd and NATS and waits until it serves the worker API.
func startCoordinator(ctx context.Context, c *Cluster) (*coordinatorProc, error) {
	n, err := coordinator.New(coordinator.Options{
		ID: "local", DataDir: filepath.Join(c.opts.Dir, "coordinator"),
		Etcd: c.Etcd, NATS: c.NC,
		HeartbeatInterval: c.opts.HeartbeatInterval, HeartbeatTimeout: c.opts.HeartbeatTimeout,
		Logger: c.log.With("component", "coordinator"),
	})
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	p := &coordinatorProc{cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- n.Run(rctx) }()
	select {
	case <-n.Ready():
	case err := <-p.done:
		cancel()
		return nil, fmt.Errorf("local: coordinator stopped before it was ready: %v", err)
	case <-ctx.Done():
		p.stop()
		return nil, fmt.Errorf("local: waiting for the coordinator: %w", ctx.Err())
	case <-time.After(60 * time.Second):
		p.stop()
		return nil, fmt.Errorf("local: the coordinator was not ready after 60s")
	}
	p.url = n.Addr()
	return p, nil
}

func (p *coordinatorProc) stop() {
	p.cancel()
	<-p.done
}
