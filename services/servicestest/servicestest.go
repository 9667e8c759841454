// Package servicestest starts the real embedded etcd and NATS servers of
// package services for tests of packages that keep state in etcd (the job
// store, the coordinator, fmctl's job commands) or publish on NATS.
package servicestest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/fmtrain/fmtrain/services"
)

// StartEtcd starts a fast single-member etcd in a temporary folder of t and
// closes it when the test ends.
func StartEtcd(t testing.TB) *services.Etcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := services.StartEtcd(ctx, services.Options{Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// EtcdClient starts an etcd (StartEtcd) and returns a client for it; both
// are closed when the test ends.
func EtcdClient(t testing.TB) *clientv3.Client {
	t.Helper()
	e := StartEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// StartNATS starts a fast NATS server with JetStream in a temporary folder of
// t and shuts it down when the test ends.
func StartNATS(t testing.TB) *services.NATS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := services.StartNATS(ctx, services.Options{Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// NATSConn starts a NATS server (StartNATS) and returns a connection to it;
// both are closed when the test ends.
func NATSConn(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(StartNATS(t).ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
