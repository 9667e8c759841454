// Package local runs the whole fmtrain system on one machine: embedded etcd
// and NATS, a coordinator, and worker processes (children of the calling
// binary). Cluster is the reusable part (the end-to-end tests drive it);
// Run is `fmctl local`: it prepares the demo data, submits the job, shows
// its progress and writes the loss plot and a sample grid when it ends.
package local
