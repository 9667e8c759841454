package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/telemetry"
)

// Config is fm-worker's command line: what cmd/fm-worker and `fmctl local`
// (which starts workers as child processes of itself) parse into a Worker.
type Config struct {
	ID                  string
	Coordinators        []string
	NATSURL             string
	Device              string
	LocalRank           int
	CollectiveAddr      string
	CollectiveAdvertise string
	CollectiveTimeout   time.Duration
	HTTPAddr            string
	WorkDir             string
	LogLevel            string
	LogJSON             bool
	DrainTimeout        time.Duration
}

// envPrefix: every flag can come from FMTRAIN_<FLAG_IN_UPPER_SNAKE>.
const envPrefix = "FMTRAIN_"

// ParseFlags parses fm-worker's flags from args (os.Args[1:]). A flag not
// given on the command line falls back to its FMTRAIN_* environment
// variable, then to its default. Errors name the flag and the value.
func ParseFlags(args []string, stderr io.Writer) (Config, error) {
	var c Config
	var coords string
	fs := flag.NewFlagSet("fm-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.ID, "id", "", "stable, cluster-unique worker id (default <hostname>-<device>)")
	fs.StringVar(&coords, "coordinator", "http://127.0.0.1:7070", "coordinator URLs, comma-separated (any replica; followers forward to the leader)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "NATS server for metrics, logs and events (empty: publish nothing)")
	fs.StringVar(&c.Device, "device", "auto", "auto, cpu, cuda or cuda:N (auto: a GPU if the driver finds one, else the CPU)")
	fs.IntVar(&c.LocalRank, "local-rank", 0, "this worker's index on its host, picks the GPU for --device auto|cuda")
	fs.StringVar(&c.CollectiveAddr, "collective-addr", "0.0.0.0:7100", "listen address of the all-reduce ring endpoint (port 0: any)")
	fs.StringVar(&c.CollectiveAdvertise, "collective-advertise", "", "host:port peers dial (DNS names allowed; default: the listen address, with this host's first non-loopback IP for 0.0.0.0)")
	fs.DurationVar(&c.CollectiveTimeout, "collective-timeout", DefaultCollectiveTimeout, "deadline of every collective operation: a dead peer ends the generation within it")
	fs.StringVar(&c.HTTPAddr, "http-addr", "", "serve /healthz and /readyz here (empty: no HTTP server)")
	fs.StringVar(&c.WorkDir, "work-dir", "", "scratch directory (created if missing)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&c.LogJSON, "log-json", false, "log JSON lines instead of text")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", DefaultDrainTimeout, "on SIGTERM/SIGINT/SIGUSR1: how long to wait for the current step before aborting it")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("fm-worker: unexpected argument %q (all settings are flags)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := f.Value.Set(v); err != nil {
				envErr = errors.Join(envErr, fmt.Errorf("fm-worker: %s=%q: %w", env, v, err))
			}
		}
	})
	if envErr != nil {
		return Config{}, envErr
	}
	for _, u := range strings.Split(coords, ",") {
		if u = strings.TrimSpace(u); u != "" {
			c.Coordinators = append(c.Coordinators, u)
		}
	}
	return c, c.Validate()
}

// Validate checks the values a flag parser cannot.
func (c Config) Validate() error {
	var errs []error
	if len(c.Coordinators) == 0 {
		errs = append(errs, errors.New("fm-worker: --coordinator is empty (want e.g. http://coord:7070)"))
	}
	if _, _, err := net.SplitHostPort(c.CollectiveAddr); err != nil {
		errs = append(errs, fmt.Errorf("fm-worker: --collective-addr %q: %w", c.CollectiveAddr, err))
	}
	if c.CollectiveAdvertise != "" {
		if _, _, err := net.SplitHostPort(c.CollectiveAdvertise); err != nil {
			errs = append(errs, fmt.Errorf("fm-worker: --collective-advertise %q: %w", c.CollectiveAdvertise, err))
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("fm-worker: --log-level %q: want debug, info, warn or error", c.LogLevel))
	}
	if c.CollectiveTimeout <= 0 {
		errs = append(errs, fmt.Errorf("fm-worker: --collective-timeout %v must be positive", c.CollectiveTimeout))
	}
	if c.DrainTimeout <= 0 {
		errs = append(errs, fmt.Errorf("fm-worker: --drain-timeout %v must be positive", c.DrainTimeout))
	}
	if c.LocalRank < 0 {
		errs = append(errs, fmt.Errorf("fm-worker: --local-rank %d must be >= 0", c.LocalRank))
	}
	return errors.Join(errs...)
}

// Logger builds the console logger the config asks for.
func (c Config) Logger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.LogLevel)) // validated
	hopts := &slog.HandlerOptions{Level: lvl}
	if c.LogJSON {
		return slog.New(slog.NewJSONHandler(w, hopts))
	}
	return slog.New(slog.NewTextHandler(w, hopts))
}

// Main runs a worker for c until ctx ends (abort) or drain is closed (the
// worker finishes its step, leaves and Main returns nil). It owns the NATS
// connection and the health server.
func Main(ctx context.Context, c Config, drain <-chan struct{}, log *slog.Logger) error {
	if c.WorkDir != "" {
		if err := os.MkdirAll(c.WorkDir, 0o755); err != nil {
			return fmt.Errorf("fm-worker: --work-dir: %w", err)
		}
	}
	client, err := api.NewClient(api.ClientOptions{Endpoints: c.Coordinators})
	if err != nil {
		return fmt.Errorf("fm-worker: %w", err)
	}
	var nc *nats.Conn
	if c.NATSURL != "" {
		nc, err = telemetry.Connect(c.NATSURL, "fm-worker "+c.ID)
		if err != nil {
			return fmt.Errorf("fm-worker: %w", err)
		}
		defer nc.Close()
	}
	w, err := New(Options{
		ID: c.ID, Coordinator: client, NATS: nc, Device: c.Device, LocalRank: c.LocalRank,
		CollectiveAddr: c.CollectiveAddr, CollectiveAdvertise: c.CollectiveAdvertise,
		CollectiveTimeout: c.CollectiveTimeout, DrainTimeout: c.DrainTimeout, HTTPAddr: c.HTTPAddr,
		Logger: log,
	})
	if err != nil {
		return err
	}
	if c.HTTPAddr != "" {
		srv, err := serveHealth(c.HTTPAddr, w, log)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	go func() {
		select {
		case <-drain:
			_ = w.Shutdown(context.Background())
		case <-ctx.Done():
		}
	}()
	return w.Run(ctx)
}

// serveHealth serves /healthz (200 while the process runs) and /readyz
// (200 once registered, until the worker stops).
func serveHealth(addr string, w *Worker, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fm-worker: --http-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprintln(rw, "ok") })
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		p := w.Phase()
		if p == PhaseRegistering || p == PhaseStopped {
			http.Error(rw, p.String(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, p)
	})
	srv := &http.Server{Addr: ln.Addr().String(), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("health server stopped", "err", err)
		}
	}()
	return srv, nil
}

// MainWithSignals runs Main until a signal: the first SIGTERM, SIGINT or
// SIGUSR1 drains the worker (finish the step, leave, return nil), a second
// one aborts the step. fm-worker and `fmctl worker` both run this.
func MainWithSignals(ctx context.Context, c Config, log *slog.Logger) error {
	ctx, abort := context.WithCancel(ctx)
	defer abort()
	drain := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			log.Info("signal: draining (send another to abort)", "signal", s.String())
			close(drain)
		case <-ctx.Done():
			return
		}
		select {
		case s := <-sigs:
			log.Warn("second signal: aborting", "signal", s.String())
			abort()
		case <-ctx.Done():
		}
	}()
	return Main(ctx, c, drain, log)
}
