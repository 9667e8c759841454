// Package servicestest starts the real embedded etcd of package services for
// tests of packages that keep state in etcd (the job store, the coordinator,
// fmctl's job commands).
package servicestest

import (
	"context"
	"testing"
	"time"

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
