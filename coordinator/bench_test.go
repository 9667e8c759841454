package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/core"
	"github.com/fmtrain/fmtrain/services/servicestest"
)

// benchCluster is a three-replica in-process cluster with one registered
// worker; it returns the cluster and the leader's index.
func benchCluster(b *testing.B) (*cluster, int) {
	c := startCluster(b, 3, servicestest.EtcdClient(b), nil)
	lead := c.leader(b)
	cl, _ := api.NewClient(api.ClientOptions{Endpoints: []string{c.nodes[lead].Addr()}})
	if _, err := cl.Register(context.Background(), api.RegisterRequest{WorkerID: "w", Host: "h", Device: "cpu", CollectiveAddr: "h:1"}); err != nil {
		b.Fatal(err)
	}
	return c, lead
}

func benchHeartbeat(b *testing.B, forwarded bool) {
	c, lead := benchCluster(b)
	target := lead
	if forwarded {
		target = (lead + 1) % 3
	}
	checkFor(b, 10*time.Second, "replica knows the leader", func() error {
		if _, id := c.nodes[target].raft.LeaderWithID(); id == "" || c.nodes[target].fsm.coordinatorHTTP(string(id)) == "" {
			return fmt.Errorf("leader unknown")
		}
		return nil
	})
	cl, _ := api.NewClient(api.ClientOptions{Endpoints: []string{c.nodes[target].Addr()}})
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if _, err := cl.Heartbeat(ctx, api.HeartbeatRequest{WorkerID: "w"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeartbeatLeader: a heartbeat answered by the leader (leader
// memory and an FSM read; no raft entry).
func BenchmarkHeartbeatLeader(b *testing.B) { benchHeartbeat(b, false) }

// BenchmarkHeartbeatForwarded: the same through a follower.
func BenchmarkHeartbeatForwarded(b *testing.B) { benchHeartbeat(b, true) }

// BenchmarkPropose: one event replicated to three replicas and applied.
func BenchmarkPropose(b *testing.B) {
	c, lead := benchCluster(b)
	n := c.nodes[lead]
	b.ResetTimer()
	for i := range b.N {
		if _, err := n.propose(core.Reported{At: time.Now(), Report: api.Report{WorkerID: "w", JobID: "none", Generation: 1,
			Kind: api.ReportProgress, Step: int64(i)}}); err != nil {
			b.Fatal(err)
		}
	}
}
