package coordinator

import (
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// etcdReconnectMaxDelay caps gRPC's reconnect backoff (120 s by default):
// after an etcd restart, job statuses resume within about this long.
const etcdReconnectMaxDelay = time.Second

// NewEtcdClient connects to the job queue the way the coordinator wants:
// reconnecting within a second of etcd coming back, with the client's own
// logging off (the coordinator logs what fails).
func NewEtcdClient(endpoints []string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: etcdReconnectMaxDelay},
			MinConnectTimeout: 2 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("coordinator: etcd client for %v: %w", endpoints, err)
	}
	return cli, nil
}
