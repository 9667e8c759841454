package services

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Etcd is an embedded single-member etcd server. Endpoints and Close may be
// called from any goroutine.
type Etcd struct {
	e         *embed.Etcd
	endpoints []string
}

// Defaults for the embedded etcd; see dependencies.md §4.2 and risk R7.
const (
	// etcdQuotaBytes caps the backend so a runaway writer fills a quota, not the disk.
	etcdQuotaBytes = 2 << 30
	// etcdCompactionRetention keeps one hour of revisions: long enough for a
	// restarted coordinator to resume its watch, short enough to stay small.
	etcdCompactionRetention = "1h"
	etcdReadyTimeout        = 60 * time.Second
)

// StartEtcd starts an embedded etcd with its data in opts.Dir and returns
// once it serves clients. The peer port is always a kernel-chosen loopback
// port: the embedded server is a single-member cluster.
func StartEtcd(ctx context.Context, opts Options) (*Etcd, error) {
	if err := opts.validate("etcd"); err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "fmtrain"
	cfg.Dir = opts.Dir
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort(opts.host(), strconv.Itoa(opts.Port))}
	peerURL := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	cfg.QuotaBackendBytes = etcdQuotaBytes
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = etcdCompactionRetention
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapLogger(opts.Logger))
	if opts.Fast {
		cfg.TickMs, cfg.ElectionMs, cfg.UnsafeNoFsync = 10, 100, true
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("services: starting etcd in %s: %w", opts.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("services: etcd failed while starting: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("services: waiting for etcd to be ready: %w", ctx.Err())
	case <-time.After(etcdReadyTimeout):
		e.Close()
		return nil, fmt.Errorf("services: etcd not ready after %v", etcdReadyTimeout)
	}
	endpoints := make([]string, 0, len(e.Clients))
	for _, l := range e.Clients {
		// The listener knows the real port when the configured one was 0.
		endpoints = append(endpoints, "http://"+l.Addr().String())
	}
	return &Etcd{e: e, endpoints: endpoints}, nil
}

// Endpoints are the client URLs (http://host:port) to give clientv3.Config.
func (s *Etcd) Endpoints() []string { return append([]string(nil), s.endpoints...) }

// Close stops the server and waits for it; safe to call more than once.
func (s *Etcd) Close() {
	s.e.Close()
}

// zapLogger adapts the slog logger the caller injected into the zap logger
// etcd insists on: warnings and errors only, or nothing when nil.
func zapLogger(l *slog.Logger) *zap.Logger {
	if l == nil {
		return zap.NewNop()
	}
	core := zapcore.NewCore(
		zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(slogWriter{l.With("server", "etcd")}),
		zapcore.WarnLevel,
	)
	return zap.New(core)
}

// slogWriter forwards each zap JSON line as one slog warning.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
