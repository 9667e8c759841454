// Command fm-coordinator runs one replica of the fmtrain coordinator: a
// member of a raft group (one or three replicas) that turns jobs in etcd
// into generations of workers. See docs/operations.md.
//
// Every flag can also be set with the environment variable
// FMTRAIN_<FLAG_IN_UPPER_SNAKE_CASE> (e.g. FMTRAIN_ETCD_ENDPOINTS); a flag on
// the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fmtrain/fmtrain/coordinator"
	"github.com/fmtrain/fmtrain/telemetry"
	"github.com/nats-io/nats.go"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "fm-coordinator:", err)
		os.Exit(1)
	}
}

// options are the parsed flags.
type options struct {
	id, dataDir                    string
	raftAddr, raftAdvertise, peers string
	join                           bool
	httpAddr, httpAdvertise        string
	etcdEndpoints, natsURL         string
	heartbeatInterval, hbTimeout   time.Duration
	maxRestarts                    int
	logLevel, logFormat            string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("fm-coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	fs.StringVar(&o.id, "id", "coord-0", "stable raft server id of this replica")
	fs.StringVar(&o.dataDir, "data-dir", "/var/lib/fmtrain/coordinator", "raft log (raft.db) and snapshots; back it up (docs/operations.md)")
	fs.StringVar(&o.raftAddr, "raft-addr", "0.0.0.0:7000", "raft listen address")
	fs.StringVar(&o.raftAdvertise, "raft-advertise", "", "raft address the other replicas dial (default: this replica's entry in --peers, else --raft-addr)")
	fs.StringVar(&o.peers, "peers", "", "static initial cluster id=host:port,... (the same on every replica, including this one); empty: a single replica")
	fs.BoolVar(&o.join, "join", false, "bootstrap nothing: wait to be added to a running group (POST /v1/raft/add-voter on it; docs/operations.md)")
	fs.StringVar(&o.httpAddr, "http-addr", "0.0.0.0:7070", "worker API, /healthz, /readyz, /metrics and /v1/status listen address")
	fs.StringVar(&o.httpAdvertise, "http-advertise", "", "URL workers and the other replicas use for this replica (default http://<http-addr>)")
	fs.StringVar(&o.etcdEndpoints, "etcd-endpoints", "http://127.0.0.1:2379", "comma-separated etcd client URLs (the job queue)")
	fs.StringVar(&o.natsURL, "nats-url", "", "NATS server URL for job events (empty: no events published)")
	fs.DurationVar(&o.heartbeatInterval, "heartbeat-interval", coordinator.DefaultHeartbeatInterval, "how often workers heartbeat")
	fs.DurationVar(&o.hbTimeout, "heartbeat-timeout", coordinator.DefaultHeartbeatTimeout, "a worker silent this long is lost and its job re-forms")
	fs.IntVar(&o.maxRestarts, "max-restarts", 20, "failed generations a job may have before it fails (same on every replica)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	if err := applyEnv(fs); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (all settings are flags)", fs.Args())
	}
	return o, nil
}

// applyEnv sets each flag from FMTRAIN_<NAME> when that variable is set;
// Parse afterwards lets the command line override it.
func applyEnv(fs *flag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := "FMTRAIN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	})
	return err
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	hopts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(o.logLevel, o.logFormat, stderr)
	if err != nil {
		return err
	}
	peers, err := coordinator.ParsePeers(o.peers)
	if err != nil {
		return err
	}
	advertise := o.raftAdvertise
	for _, p := range peers {
		if p.ID == o.id && advertise == "" {
			advertise = p.RaftAddr
		}
	}
	cli, err := coordinator.NewEtcdClient(strings.Split(o.etcdEndpoints, ","))
	if err != nil {
		return err
	}
	defer cli.Close()
	var nc *nats.Conn
	if o.natsURL != "" {
		nc, err = telemetry.Connect(o.natsURL, "fm-coordinator "+o.id)
		if err != nil {
			return err
		}
		defer nc.Close()
	}
	n, err := coordinator.New(coordinator.Options{
		ID: o.id, DataDir: o.dataDir, RaftAddr: o.raftAddr, RaftAdvertise: advertise, Peers: peers, Join: o.join,
		HTTPAddr: o.httpAddr, HTTPAdvertise: o.httpAdvertise, Etcd: cli, NATS: nc,
		HeartbeatInterval: o.heartbeatInterval, HeartbeatTimeout: o.hbTimeout, MaxRestarts: o.maxRestarts,
		Logger: log,
	})
	if err != nil {
		return err
	}
	log.Info("fm-coordinator started", "id", o.id, "http", n.Addr(), "raft", o.raftAddr, "peers", o.peers, "etcd", o.etcdEndpoints)
	err = n.Run(ctx)
	log.Info("fm-coordinator stopped")
	return err
}
