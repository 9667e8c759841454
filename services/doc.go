// Package services starts the real servers fmtrain depends on, embedded in the
// calling process: etcd (the job queue and the status users see) and NATS with
// JetStream (metrics, logs and events). Tests and `fmctl local` use them; in
// production both run as external servers and nothing here is used.
//
// Both follow the nats-server habit of an embeddable server with a thin main:
// Start* returns once the server is ready for clients (no sleeps), the caller
// reads the real address from the returned value (ports are chosen by the
// kernel when Port is 0), and Close stops it and waits. Neither server
// installs signal handlers in the host process.
//
// Tests call package servicestest, which starts them in the test's temporary
// folder and closes them when the test ends:
//
//	cli := servicestest.EtcdClient(t) // or servicestest.StartEtcd(t) for the server
//	nc := servicestest.NATSConn(t)    // or servicestest.StartNATS(t)
package services

import (
	"errors"
	"log/slog"
)

// Options configures an embedded server. The zero value of every field but Dir
// is a working default.
type Options struct {
	// Dir holds the server's data (etcd's member directory or JetStream's
	// store). Required: an embedded server never writes to a default path.
	Dir string
	// Host is the interface the client port listens on; "" means 127.0.0.1.
	// Use "0.0.0.0" to let workers on other hosts connect.
	Host string
	// Port is the client port; 0 lets the kernel choose a free one.
	Port int
	// Fast trades durability for speed, for tests: etcd uses a 10 ms tick,
	// a 100 ms election timeout and no fsync; JetStream gets small memory
	// and store limits. Never set it for data you want to keep.
	Fast bool
	// Logger receives the server's own warnings and errors; nil discards them.
	Logger *slog.Logger
}

func (o Options) validate(what string) error {
	if o.Dir == "" {
		return errors.New("services: " + what + ": Options.Dir is required (the data directory)")
	}
	if o.Port < 0 || o.Port > 65535 {
		return errors.New("services: " + what + ": Options.Port must be in [0, 65535]")
	}
	return nil
}

func (o Options) host() string {
	if o.Host == "" {
		return "127.0.0.1"
	}
	return o.Host
}
