package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestFlagDefaults pins the defaults deploy/ and docs/operations.md rely on.
func TestFlagDefaults(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := options{id: "coord-0", dataDir: "/var/lib/fmtrain/coordinator", raftAddr: "0.0.0.0:7000",
		httpAddr: "0.0.0.0:7070", etcdEndpoints: "http://127.0.0.1:2379", heartbeatInterval: 500 * time.Millisecond,
		hbTimeout: 5 * time.Second, maxRestarts: 20, logLevel: "info", logFormat: "text"}
	if *o != want {
		t.Fatalf("defaults changed:\n got %+v\nwant %+v", *o, want)
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("FMTRAIN_ETCD_ENDPOINTS", "http://etcd:2379")
	t.Setenv("FMTRAIN_HEARTBEAT_TIMEOUT", "3s")
	t.Setenv("FMTRAIN_ID", "coord-2")
	o, err := parseFlags([]string{"--id", "coord-1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.etcdEndpoints != "http://etcd:2379" || o.hbTimeout != 3*time.Second || o.id != "coord-1" {
		t.Fatalf("env or precedence wrong: %+v", *o)
	}
	t.Setenv("FMTRAIN_HEARTBEAT_TIMEOUT", "soon")
	if _, err := parseFlags(nil, io.Discard); err == nil || !strings.Contains(err.Error(), "FMTRAIN_HEARTBEAT_TIMEOUT") {
		t.Fatalf("bad env value: %v", err)
	}
}

func TestBadFlags(t *testing.T) {
	if _, err := parseFlags([]string{"extra"}, io.Discard); err == nil {
		t.Fatal("a positional argument was accepted")
	}
	if _, err := newLogger("loud", "text", io.Discard); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("bad log level: %v", err)
	}
	err := run(t.Context(), []string{"--peers", "c0=a:1,c1", "--data-dir", t.TempDir()}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `"c1"`) {
		t.Fatalf("bad --peers: %v", err)
	}
	err = run(t.Context(), []string{"--id", "x", "--peers", "c0=127.0.0.1:1", "--data-dir", t.TempDir(), "--etcd-endpoints", "http://127.0.0.1:1"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `"x" is not among the peers`) {
		t.Fatalf("id outside the peers: %v", err)
	}
}
