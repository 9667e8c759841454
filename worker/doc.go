// Package worker is fm-worker: one process per GPU (or CPU) that registers
// with the coordinator, waits for a generation of a job to be assigned, trains
// it in lock-step with its peers through the collective ring, publishes its
// metrics and logs on NATS, and drains cleanly on SIGTERM.
//
// The worker's own life is the pure Lifecycle state type (register → wait
// for a generation → train → drain), which the Worker drives from heartbeat
// replies, finished training runs and shutdown requests.
package worker
