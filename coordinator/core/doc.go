// Package core holds every decision the coordinator makes, as one pure state
// type in the style of etcd-io/raft: State.Step(event) returns the actions to
// take and changes nothing else. State starts no goroutine, reads no clock,
// opens no socket and touches no etcd or NATS; time arrives inside events
// (their At field), so Step is deterministic and every replica of the raft
// FSM that applies the same events holds the same State.
//
// What it decides: which jobs run, on which workers, in which rank order;
// when a generation forms (min_workers available), re-forms (a member lost,
// failed, left, or new workers can join at a checkpoint) and with what world
// size and gradient accumulation (the global batch never changes); the step,
// sample position and checkpoint each generation resumes from; when a job
// finishes, fails or is cancelled.
//
// Actions (write a job's status to etcd, publish an event on NATS) are also
// kept in State's outbox with increasing sequence numbers until an
// ActionsDone event acknowledges them. Only the raft leader executes them;
// a new leader executes whatever is still in the outbox, and since each
// action is idempotent (a status write puts the whole status; an event carries
// a de-duplication id built from the job and its sequence number) doing one
// twice changes nothing.
//
// The driving loop (coordinator.Node) is, in outline:
//
//	ev := <what happened>                    // job watch, register, report, missed heartbeat
//	data, _ := core.EncodeEvent(ev)
//	raft.Apply(data, timeout)                // every replica: fsm.Apply → state.Step(ev)
//	if leader {                              // coordinator.Node.executeActions
//		for _, a := range state.Outbox { execute(a) }
//		raft.Apply(EncodeEvent(ActionsDone{Seq: last.Seq}))
//	}
//
// State is not safe for concurrent use; the FSM guards it with a lock.
package core
