// Package e2e holds fmtrain's end-to-end tests: real embedded etcd and NATS,
// the coordinator, and worker PROCESSES (the test binary re-executed as
// fm-worker), driven through local.Cluster. They check what a user relies
// on: a job trains to max_steps with the exact step count and data, metrics
// arrive on NATS, status is in etcd, a killed worker costs only the steps
// since the last checkpoint, a restarted worker rejoins, and a bad job fails
// alone with a clear status.
package e2e
