package services_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/services"
	"github.com/fmtrain/fmtrain/services/servicestest"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestEtcdServesTxnAndWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := servicestest.StartEtcd(t)
	if len(e.Endpoints()) != 1 || strings.HasSuffix(e.Endpoints()[0], ":0") {
		t.Fatalf("Endpoints() = %v, want one URL with a real port", e.Endpoints())
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	wch := cli.Watch(ctx, "/t/", clientv3.WithPrefix())
	create := func() bool {
		r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision("/t/a"), "=", 0)).
			Then(clientv3.OpPut("/t/a", "v")).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return r.Succeeded
	}
	if !create() {
		t.Fatal("first create-only txn did not succeed")
	}
	if create() {
		t.Fatal("second create-only txn succeeded on an existing key")
	}
	select {
	case wr := <-wch:
		if len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != "/t/a" {
			t.Fatalf("watch delivered %+v, want the put of /t/a", wr.Events)
		}
	case <-ctx.Done():
		t.Fatal("watch delivered nothing")
	}
}

func TestNATSJetStreamPublishAndReplay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(servicestest.NATSConn(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := js.Publish(ctx, "t.x", []byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := js.OrderedConsumer(ctx, "T", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for m := range batch.Messages() {
		got += string(m.Data())
	}
	if got != "abc" {
		t.Fatalf("replayed %q, want %q", got, "abc")
	}
}

func TestOptionsRejectMissingDir(t *testing.T) {
	ctx := context.Background()
	if _, err := services.StartEtcd(ctx, services.Options{}); err == nil || !strings.Contains(err.Error(), "Dir") {
		t.Fatalf("StartEtcd without Dir: err = %v, want one naming Dir", err)
	}
	if _, err := services.StartNATS(ctx, services.Options{Dir: t.TempDir(), Port: 70000}); err == nil || !strings.Contains(err.Error(), "Port") {
		t.Fatalf("StartNATS with Port 70000: err = %v, want one naming Port", err)
	}
}
