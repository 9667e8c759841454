// Package api is the contract between fm-coordinator and everything that
// talks to it: the worker protocol (register, heartbeat, report, leave) with
// its HTTP client, the job status the coordinator writes to etcd, and the etcd
// key layout. It imports nothing of the coordinator's internals, so workers,
// fmctl and deploy tests depend on it alone.
//
// # Worker protocol (JSON over HTTP, POST, any coordinator replica)
//
//	POST /v1/workers/register   RegisterRequest  → RegisterResponse
//	POST /v1/workers/heartbeat  HeartbeatRequest → HeartbeatResponse
//	POST /v1/workers/report     Report           → ReportResponse
//	POST /v1/workers/leave      LeaveRequest     → LeaveResponse
//
// A follower forwards each call to the raft leader, so a worker may be
// given every replica's address and use whichever answers; while no leader is
// known the replica answers 503 and Client tries the next address.
//
// The worker's loop, as Client drives it:
//
//  1. Register once at start (and again whenever a call fails with
//     ErrUnknownWorker: the coordinator declared this worker lost). Registering
//     means "I run nothing": a worker that registers while the coordinator
//     still counts it in a generation ends that generation.
//  2. Heartbeat every RegisterResponse.HeartbeatInterval. Each reply carries
//     the worker's current Assignment, or nil. The assignment is the whole
//     instruction: a new (job, generation) means "stop what you run, start
//     this"; nil means "run nothing". A worker never restarts a generation it
//     has stopped or seen fail; the coordinator forms a new one (a higher
//     Generation) instead. Missing heartbeats for the coordinator's
//     HeartbeatTimeout declares the worker lost.
//     Heartbeats say what the worker runs right now (job and generation,
//     empty once a stopped generation's training has returned): a re-forming
//     job waits for exactly that.
//  3. Report checkpoints (rank 0, after the checkpoint is complete on disk),
//     progress (optional; heartbeats carry the step too), a failure (any rank:
//     Fatal for errors that a new generation cannot fix, such as a missing
//     dataset or a corrupt shard; not Fatal for a lost peer or a collective
//     timeout, naming the lost peer in LostPeer when known), and finishing
//     (every rank that completed the last step; the first report wins).
//  4. Leave on SIGTERM after the current step: the coordinator re-forms the job
//     without this worker from its last checkpoint.
//
// Reports about a generation that is no longer current are acknowledged and
// ignored (ReportResponse.Accepted is false), so a slow worker cannot disturb
// the generation that replaced its own.
package api
