// Package coordinator is fm-coordinator: one replica of a raft group
// (hashicorp/raft; one or three replicas) whose replicated state is
// core.State — jobs, workers, generations, assignments, checkpoints and the
// outbox of actions. It serves the worker protocol of package api over HTTP
// (followers forward to the leader), and while it leads it
//
//   - watches the etcd job prefix (resuming after the revision the state
//     last applied) and proposes JobSubmitted / JobCancelled;
//   - keeps workers' heartbeats in memory (not in raft) and proposes
//     WorkerLost after HeartbeatTimeout, ReformDue for a re-forming job
//     whose members stay silent, and the newest heartbeat step as progress;
//   - executes the outbox: job statuses to etcd (never replacing a newer
//     one) and job events to NATS JetStream (with de-duplication ids), then
//     acknowledges them through raft, so a new leader re-does only what
//     was not done.
//
// Only the leader acts, after raft.Barrier has applied everything its
// predecessor committed. The driving loop, for one replica:
//
//	n, err := coordinator.New(coordinator.Options{ID: "c0", DataDir: dir, Etcd: cli, NATS: nc})
//	go n.Run(ctx)           // HTTP + leader loop until ctx ends
//	<-n.Ready()             // serving the worker API
//	workers: api.NewClient(api.ClientOptions{Endpoints: []string{n.Addr()}})
//
// Node's methods are safe for concurrent use. Locks: fsm.mu (state) and
// liveness.mu (leader memory); dueEvents takes liveness.mu, then fsm.mu
// (through the fsm's query methods); nothing takes them the other way round.
package coordinator
