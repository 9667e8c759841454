package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// defaultEtcdEndpoints is where fmctl finds the job queue unless
// --etcd-endpoints or FMTRAIN_ETCD_ENDPOINTS says otherwise.
const defaultEtcdEndpoints = "http://127.0.0.1:2379"

// addEtcdFlag adds --etcd-endpoints to cmd and returns where its value lands.
func addEtcdFlag(cmd *cobra.Command) *string {
	return addEnvFlag(cmd, "etcd-endpoints", "FMTRAIN_ETCD_ENDPOINTS", defaultEtcdEndpoints, "comma-separated etcd client URLs of the job queue")
}

// connectEtcd opens a client and checks the server answers; the caller
// closes it.
func connectEtcd(cmd *cobra.Command, endpoints string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", endpoints, err)
	}
	if _, err := cli.Status(cmd.Context(), cli.Endpoints()[0]); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd at %s does not answer (set --etcd-endpoints or FMTRAIN_ETCD_ENDPOINTS): %w", endpoints, err)
	}
	return cli, nil
}
