// Package telemetrytest starts a real embedded NATS server with JetStream
// and the fmtrain stream for tests of packages that publish or read
// telemetry.
package telemetrytest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fmtrain/fmtrain/telemetry"
)

// Server is a running test server and a client connection to it.
type Server struct {
	URL  string
	Conn *nats.Conn
	JS   jetstream.JetStream
}

// Start runs a NATS server with JetStream on a random loopback port for the
// duration of the test, connects to it and creates the telemetry stream
// (twice, to prove EnsureStream is idempotent).
func Start(t testing.TB) *Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 256 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("telemetrytest: NATS server not ready after 10s")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		if err := telemetry.EnsureStream(ctx, js, telemetry.StreamOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return &Server{URL: ns.ClientURL(), Conn: nc, JS: js}
}
