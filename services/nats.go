package services

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS is an embedded NATS server with JetStream enabled. ClientURL and Close
// may be called from any goroutine.
type NATS struct {
	ns *server.Server
}

// JetStream limits, set explicitly so they do not depend on the host's size
// (dependencies.md §5, risk R7).
const (
	natsMaxMemory     = 256 << 20
	natsMaxStore      = 8 << 30
	natsFastMaxMemory = 64 << 20
	natsFastMaxStore  = 1 << 30
	natsReadyTimeout  = 30 * time.Second
)

// StartNATS starts an embedded NATS server with JetStream storing in opts.Dir
// and returns once it accepts connections.
func StartNATS(ctx context.Context, opts Options) (*NATS, error) {
	if err := opts.validate("nats"); err != nil {
		return nil, err
	}
	port := opts.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	so := &server.Options{
		ServerName:         "fmtrain",
		Host:               opts.host(),
		Port:               port,
		JetStream:          true,
		StoreDir:           opts.Dir,
		JetStreamMaxMemory: natsMaxMemory,
		JetStreamMaxStore:  natsMaxStore,
		NoSigs:             true,
		NoLog:              opts.Logger == nil,
	}
	if opts.Fast {
		so.JetStreamMaxMemory, so.JetStreamMaxStore = natsFastMaxMemory, natsFastMaxStore
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("services: configuring nats: %w", err)
	}
	if opts.Logger != nil {
		ns.SetLoggerV2(natsLogger{opts.Logger.With("server", "nats")}, false, false, false)
	}
	go ns.Start()
	deadline := natsReadyTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < deadline {
		deadline = time.Until(d)
	}
	if !ns.ReadyForConnections(deadline) {
		ns.Shutdown()
		ns.WaitForShutdown()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("services: waiting for nats to be ready: %w", err)
		}
		return nil, fmt.Errorf("services: nats not ready after %v", deadline)
	}
	return &NATS{ns: ns}, nil
}

// ClientURL is the nats://host:port URL clients connect to.
func (s *NATS) ClientURL() string { return s.ns.ClientURL() }

// Server is the embedded server, for in-process connections
// (nats.InProcessServer) and for tests that need its internals.
func (s *NATS) Server() *server.Server { return s.ns }

// Close stops the server and waits for it; safe to call more than once.
func (s *NATS) Close() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// natsLogger forwards the server's warnings and errors to slog; notices and
// debug output are dropped (the server is chatty at start-up).
type natsLogger struct{ l *slog.Logger }

var _ server.Logger = natsLogger{}

func (n natsLogger) Noticef(string, ...any) {}
func (n natsLogger) Debugf(string, ...any)  {}
func (n natsLogger) Tracef(string, ...any)  {}
func (n natsLogger) Warnf(format string, v ...any) {
	n.l.Warn(fmt.Sprintf(format, v...))
}
func (n natsLogger) Errorf(format string, v ...any) {
	n.l.Error(fmt.Sprintf(format, v...))
}
func (n natsLogger) Fatalf(format string, v ...any) {
	n.l.Error(fmt.Sprintf(format, v...))
}
