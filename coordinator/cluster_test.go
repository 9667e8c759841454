package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/jobstore"
	"github.com/fmtrain/fmtrain/services/servicestest"
	"github.com/fmtrain/fmtrain/telemetry"
	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// cluster is three replicas in this process on raft's in-memory transport,
// sharing one real (embedded) etcd and NATS.
type cluster struct {
	nodes   []*Node
	trans   []*raft.InmemTransport
	cancels []context.CancelFunc
	done    []chan struct{}
}

func startCluster(t testing.TB, size int, cli *clientv3.Client, nc *nats.Conn) *cluster {
	t.Helper()
	c := &cluster{}
	log := testLogger(t)
	var peers []Peer
	for i := range size {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("raft-%d", i)))
		c.trans = append(c.trans, tr)
		peers = append(peers, Peer{ID: fmt.Sprintf("c%d", i), RaftAddr: string(addr)})
	}
	for i := range c.trans {
		for j := range c.trans {
			if i != j {
				c.trans[i].Connect(c.trans[j].LocalAddr(), c.trans[j])
			}
		}
	}
	for i := range size {
		n, err := New(Options{ID: peers[i].ID, InMemory: true, Transport: c.trans[i], Peers: peers,
			Etcd: cli, NATS: nc, HeartbeatInterval: testHeartbeatInterval, HeartbeatTimeout: testHeartbeatTimeout,
			ProgressInterval: 200 * time.Millisecond, TuneRaft: fastRaft, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := n.Run(ctx); err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
		}()
		c.nodes, c.cancels, c.done = append(c.nodes, n), append(c.cancels, cancel), append(c.done, done)
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	return c
}

// stop shuts replica i down (its Run returns).
func (c *cluster) stop(i int) {
	c.cancels[i]()
	<-c.done[i]
}

// leader waits for exactly one ready leader among the replicas not in skip.
func (c *cluster) leader(t testing.TB, skip ...int) int {
	t.Helper()
	leader := -1
	checkFor(t, 10*time.Second, "one ready leader", func() error {
		var ls []int
		for i, n := range c.nodes {
			if !slices.Contains(skip, i) && n.IsLeader() {
				ls = append(ls, i)
			}
		}
		if len(ls) != 1 {
			return fmt.Errorf("leaders %v", ls)
		}
		leader = ls[0]
		return nil
	})
	return leader
}

func (c *cluster) addrs(skip ...int) []string {
	var out []string
	for i, n := range c.nodes {
		if !slices.Contains(skip, i) {
			out = append(out, n.Addr())
		}
	}
	return out
}

// TestClusterFailover: a job's generation survives the loss of the raft
// leader unchanged (no re-form, no duplicate or lost assignment), and the
// new leader goes on deciding: it re-forms after a worker dies and finishes
// the job.
func TestClusterFailover(t *testing.T) {
	cli, nc := servicestest.EtcdClient(t), servicestest.NATSConn(t)
	c := startCluster(t, 3, cli, nc)
	lead := c.leader(t)
	follower := (lead + 1) % 3

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var workers []*simWorker
	for _, id := range []string{"w0", "w1", "w2"} {
		// Each worker knows every replica but tries a follower first:
		// the follower forwards to the leader.
		eps := append([]string{c.nodes[follower].Addr()}, c.addrs(follower)...)
		w := newSimWorker(t, id, eps...)
		workers = append(workers, w)
		go w.run(ctx, t)
	}
	if _, err := jobstore.Submit(ctx, cli, "job1", testSpec("job1", 2, 3, 12, 2, 100)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cli, "job1", 15*time.Second, "job running on three workers", func(s *api.JobStatus) bool {
		return s.State == api.JobRunning && len(s.Workers) == 3
	})
	checkFor(t, 10*time.Second, "every worker holds the generation", func() error {
		return sameGeneration(workers, "job1", st.Generation)
	})
	checkAssignments(t, workers, 3)

	// Progress and a checkpoint, reported through the follower.
	rank0 := workerWithRank(workers, 0)
	for _, w := range workers {
		w.train(12)
	}
	if r := rank0.report(t, api.ReportCheckpoint, 10, nil); !r.Accepted {
		t.Fatal("checkpoint report not accepted")
	}
	waitStatus(t, cli, "job1", 10*time.Second, "checkpoint and progress in etcd", func(s *api.JobStatus) bool {
		return s.LastCheckpoint != nil && s.LastCheckpoint.Step == 10 && s.Step == 12
	})

	// Kill the raft leader.
	genBefore := st.Generation
	c.stop(lead)
	newLead := c.leader(t, lead)
	t.Logf("leader c%d stopped; c%d leads", lead, newLead)
	// A heartbeat timeout later, nobody was declared lost and nothing re-formed.
	time.Sleep(testHeartbeatTimeout + 500*time.Millisecond)
	if err := sameGeneration(workers, "job1", genBefore); err != nil {
		t.Fatalf("after failover: %v", err)
	}
	if st, _ := jobstore.Status(ctx, cli, "job1"); st.Generation != genBefore || st.State != api.JobRunning {
		t.Fatalf("after failover the job changed: %+v", st)
	}
	checkAssignments(t, workers, 3)

	// A worker dies: the new leader re-forms from the checkpoint with two.
	dead := workerWithRank(workers, 1)
	dead.silence()
	st = waitStatus(t, cli, "job1", 15*time.Second, "re-formed without the dead worker", func(s *api.JobStatus) bool {
		return s.State == api.JobRunning && s.Generation > genBefore && len(s.Workers) == 2
	})
	if slices.Contains(st.Workers, dead.id) || st.Restarts != 1 {
		t.Fatalf("re-formed status: %+v", st)
	}
	var alive []*simWorker
	for _, w := range workers {
		if w != dead {
			alive = append(alive, w)
		}
	}
	checkFor(t, 10*time.Second, "survivors hold the new generation", func() error { return sameGeneration(alive, "job1", st.Generation) })
	for _, w := range alive {
		a := w.assignment()
		if a.StartStep != 10 || a.ResumeFrom == nil || a.ResumeFrom.Step != 10 || a.GradAccum != 3 || a.Data.StartSample != 120 {
			t.Fatalf("%s resumes wrongly: %+v", w.id, a)
		}
	}
	checkAssignments(t, alive, 2)

	// The job finishes.
	if r := alive[0].report(t, api.ReportFinished, 100, nil); !r.Accepted {
		t.Fatal("finished report not accepted")
	}
	waitStatus(t, cli, "job1", 10*time.Second, "finished", func(s *api.JobStatus) bool {
		return s.State == api.JobFinished && s.Step == 100
	})
	checkFor(t, 5*time.Second, "workers released", func() error {
		for _, w := range alive {
			if w.assignment() != nil {
				return fmt.Errorf("%s still has %+v", w.id, w.assignment())
			}
		}
		return nil
	})

	// Events: every generation formed once, despite the change of leader.
	evs := readEvents(t, nc, "job1")
	formed := map[uint64]int{}
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, string(e.Kind))
		if e.Kind == telemetry.EventGenerationFormed {
			formed[e.Generation]++
		}
	}
	for g := uint64(1); g <= st.Generation; g++ {
		if formed[g] != 1 {
			t.Errorf("generation %d formed event published %d times; events %v", g, formed[g], kinds)
		}
	}
	for _, k := range []telemetry.EventKind{telemetry.EventStarted, telemetry.EventCheckpointWritten, telemetry.EventWorkerLost, telemetry.EventFinished} {
		if !slices.Contains(kinds, string(k)) {
			t.Errorf("no %s event; events %v", k, kinds)
		}
	}
}

func sameGeneration(ws []*simWorker, job string, gen uint64) error {
	for _, w := range ws {
		if a := w.assignment(); a == nil || a.JobID != job || a.Generation != gen {
			return fmt.Errorf("%s holds %+v, want job %s generation %d", w.id, a, job, gen)
		}
	}
	return nil
}

// checkAssignments: one generation, ranks 0..n-1 each held once, peers in
// rank order.
func checkAssignments(t *testing.T, ws []*simWorker, n int) {
	t.Helper()
	ranks := map[int]string{}
	for _, w := range ws {
		a := w.assignment()
		if a.WorldSize != n || len(a.Peers) != n || a.Workers[a.Rank] != w.id || a.Peers[a.Rank] != w.id+":7100" {
			t.Fatalf("%s: bad assignment %+v", w.id, a)
		}
		if other, dup := ranks[a.Rank]; dup {
			t.Fatalf("rank %d held by %s and %s", a.Rank, other, w.id)
		}
		ranks[a.Rank] = w.id
	}
}

func workerWithRank(ws []*simWorker, rank int) *simWorker {
	for _, w := range ws {
		if a := w.assignment(); a != nil && a.Rank == rank {
			return w
		}
	}
	return nil
}

func readEvents(t *testing.T, nc *nats.Conn, job string) []telemetry.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, telemetry.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{telemetry.EventsSubject(job)}})
	if err != nil {
		t.Fatal(err)
	}
	var evs []telemetry.Event
	for {
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			var e telemetry.Event
			if err := json.Unmarshal(m.Data(), &e); err != nil {
				t.Fatal(err)
			}
			evs = append(evs, e)
			got++
		}
		if got == 0 {
			return evs
		}
	}
}

// TestPartitionedLeaderStepsDown: a leader cut off from both followers stops
// serving; the majority elects a new leader that serves workers; after the
// partition heals, the old leader follows and holds the same state.
func TestPartitionedLeaderStepsDown(t *testing.T) {
	cli := servicestest.EtcdClient(t)
	c := startCluster(t, 3, cli, nil)
	lead := c.leader(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newSimWorker(t, "w0", c.addrs()...)
	go w.run(ctx, t)
	if _, err := jobstore.Submit(ctx, cli, "p1", testSpec("p1", 1, 1, 4, 4, 10)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cli, "p1", 10*time.Second, "running", func(s *api.JobStatus) bool { return s.State == api.JobRunning })

	c.trans[lead].DisconnectAll()
	for i := range c.trans {
		c.trans[i].Disconnect(c.trans[lead].LocalAddr())
	}
	newLead := c.leader(t, lead)
	checkFor(t, 5*time.Second, "old leader steps down", func() error {
		if c.nodes[lead].IsLeader() {
			return fmt.Errorf("c%d still leads", lead)
		}
		return nil
	})
	// The isolated replica refuses worker calls (it knows no leader it can reach).
	resp, err := http.Post(c.nodes[lead].Addr()+api.PathHeartbeat, "application/json", strings.NewReader(`{"worker_id":"w0"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("isolated replica answered %s: %s", resp.Status, body)
	}
	// The majority keeps deciding: the job finishes.
	checkFor(t, 10*time.Second, "worker still assigned", func() error {
		if w.assignment() == nil {
			return fmt.Errorf("no assignment")
		}
		return nil
	})
	w.report(t, api.ReportFinished, 10, nil)
	waitStatus(t, cli, "p1", 10*time.Second, "finished under the new leader", func(s *api.JobStatus) bool { return s.State == api.JobFinished })

	// Heal: the old leader catches up and holds the same state.
	for i := range c.trans {
		if i != lead {
			c.trans[lead].Connect(c.trans[i].LocalAddr(), c.trans[i])
			c.trans[i].Connect(c.trans[lead].LocalAddr(), c.trans[lead])
		}
	}
	checkFor(t, 10*time.Second, "old leader catches up", func() error {
		if got, want := c.nodes[lead].fsm.jobStatus("p1"), c.nodes[newLead].fsm.jobStatus("p1"); got == nil || got.State != want.State {
			return fmt.Errorf("old leader has %+v, new leader %+v", got, want)
		}
		return nil
	})
}

// TestGrowGroup: a single replica with a job grows to three by adding
// replicas started with Join; then the first replica stops and the group
// keeps the job.
func TestGrowGroup(t *testing.T) {
	cli := servicestest.EtcdClient(t)
	var trans []*raft.InmemTransport
	for i := range 3 {
		_, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("g-%d", i)))
		trans = append(trans, tr)
	}
	for i := range trans {
		for j := range trans {
			if i != j {
				trans[i].Connect(trans[j].LocalAddr(), trans[j])
			}
		}
	}
	var nodes []*Node
	var stops []func()
	for i := range 3 {
		n, err := New(Options{ID: fmt.Sprintf("g%d", i), InMemory: true, Transport: trans[i], Join: i > 0,
			Etcd: cli, HeartbeatInterval: testHeartbeatInterval, HeartbeatTimeout: testHeartbeatTimeout, TuneRaft: fastRaft})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = n.Run(ctx) }()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		nodes, stops = append(nodes, n), append(stops, stop)
	}
	<-nodes[0].Ready()
	if _, err := jobstore.Submit(context.Background(), cli, "g", testSpec("g", 1, 1, 4, 4, 10)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cli, "g", 10*time.Second, "pending", func(s *api.JobStatus) bool { return s.State == api.JobPending })
	for i := 1; i < 3; i++ {
		body := fmt.Sprintf(`{"id":"g%d","raft_addr":"g-%d"}`, i, i)
		resp, err := http.Post(nodes[0].Addr()+api.PathAddVoter, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), fmt.Sprintf(`"id":"g%d"`, i)) {
			t.Fatalf("add-voter g%d: %s %s", i, resp.Status, b)
		}
	}
	checkFor(t, 10*time.Second, "joined replicas hold the job", func() error {
		for _, n := range nodes[1:] {
			if st := n.fsm.jobStatus("g"); st == nil {
				return fmt.Errorf("%s has no job g", n.opts.ID)
			}
		}
		return nil
	})
	stops[0]()
	c := &cluster{nodes: nodes}
	lead := c.leader(t, 0)
	if st := nodes[lead].fsm.jobStatus("g"); st.State != api.JobPending {
		t.Fatalf("after the first replica stopped: %+v", st)
	}
}
