//go:build multihost

package multihost

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fmtrain/fmtrain/coordinator"
	"github.com/fmtrain/fmtrain/coordinator/api"
)

// cluster is one compose project: the containers of deploy/docker/compose.yaml
// under a project name of its own, reached from this host through ports
// published on 127.0.0.1.
type cluster struct {
	t       *testing.T
	root    string // repository root
	project string
	compose []string // the compose command and its fixed arguments
	env     []string
	shared  string // host directory bound at /shared in the containers
	etcd    *clientv3.Client
	etcdURL string
	coords  map[string]string // service -> http://127.0.0.1:port
	ids     map[string]string // service -> container id (stable across stop, start, reconnect)
}

const (
	network          = "fmtrain" // the network's name in compose.yaml
	heartbeatTimeout = 4 * time.Second
)

var (
	coordinators = []string{"coord-0", "coord-1", "coord-2"}
	workers      = []string{"worker-0", "worker-1", "worker-2"}
)

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// startCluster brings the compose cluster up and waits until every container
// is healthy. Cleanup tears it all down, volumes included, and prints the
// containers' logs first if the test failed.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	root := repoRoot(t)
	for _, bin := range []string{"fmctl", "fm-coordinator", "fm-worker", "etcd", "nats-server"} {
		if _, err := os.Stat(filepath.Join(root, "bin", "deploy", bin)); err != nil {
			t.Fatalf("bin/deploy/%s is missing: run `make images` first (`make test-multihost` does)", bin)
		}
	}
	composeCmd := strings.Fields(os.Getenv("FMTRAIN_COMPOSE"))
	if len(composeCmd) == 0 {
		composeCmd = []string{"docker-compose"}
	}
	shared, err := os.MkdirTemp("", "fmtrain-multihost-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{
		t:       t,
		root:    root,
		project: fmt.Sprintf("fmtrain-mh-%d", os.Getpid()),
		shared:  shared,
		coords:  map[string]string{},
		ids:     map[string]string{},
	}
	c.compose = append(composeCmd, "-p", c.project, "-f", filepath.Join(root, "deploy", "docker", "compose.yaml"))
	// Fixed host ports, chosen free now: a port Docker picks itself changes
	// when the container restarts, and the faults restart containers.
	c.env = append(os.Environ(),
		"FMTRAIN_ETCD_PORT="+freePort(t), "FMTRAIN_NATS_PORT="+freePort(t),
		"FMTRAIN_COORD0_PORT="+freePort(t), "FMTRAIN_COORD1_PORT="+freePort(t), "FMTRAIN_COORD2_PORT="+freePort(t),
		"FMTRAIN_SHARED="+shared,
		fmt.Sprintf("FMTRAIN_UID=%d", os.Getuid()), fmt.Sprintf("FMTRAIN_GID=%d", os.Getgid()),
		"FMTRAIN_HEARTBEAT_TIMEOUT="+heartbeatTimeout.String(),
	)
	t.Cleanup(c.teardown)

	start := time.Now()
	c.run("compose up", append(c.compose, "up", "-d")...)
	c.waitHealthy(3 * time.Minute)
	t.Logf("cluster %s healthy after %v", c.project, time.Since(start).Round(time.Millisecond))

	for _, s := range append(append([]string{"etcd", "nats"}, coordinators...), workers...) {
		c.container(s)
	}
	c.etcdURL = "http://" + c.hostPort("etcd", 2379)
	for _, s := range coordinators {
		c.coords[s] = "http://" + c.hostPort(s, 7070)
	}
	// The coordinator's client: quiet, and reconnecting within a second after
	// etcd restarts (gRPC's default backoff would make the test measure its
	// own reconnect instead of fmtrain's recovery).
	c.etcd, err = coordinator.NewEtcdClient([]string{c.etcdURL})
	if err != nil {
		t.Fatalf("etcd client for %s: %v", c.etcdURL, err)
	}
	return c
}

// freePort returns a TCP port on 127.0.0.1 that is free right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

func (c *cluster) teardown() {
	if c.etcd != nil {
		c.etcd.Close()
	}
	if c.t.Failed() {
		out, _ := c.output(append(c.compose, "logs", "--no-color", "--tail=80")...)
		c.t.Logf("container logs (last 80 lines each):\n%s", out)
	}
	if out, err := c.output(append(c.compose, "down", "-v", "--remove-orphans", "-t", "10")...); err != nil {
		c.t.Errorf("compose down: %v\n%s", err, out)
	}
	// Nothing of the project may be left behind.
	if out, _ := c.output("docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+c.project); strings.TrimSpace(out) != "" {
		c.t.Errorf("containers left after compose down: %s", out)
	}
	os.RemoveAll(c.shared)
}

func (c *cluster) output(args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = c.env
	cmd.Dir = c.root
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

func (c *cluster) run(what string, args ...string) string {
	c.t.Helper()
	out, err := c.output(args...)
	if err != nil {
		c.t.Fatalf("%s (%s): %v\n%s", what, strings.Join(args, " "), err, out)
	}
	return out
}

// container returns the container id of a compose service, asking compose
// once (it takes a second or two, too slow to sit inside a fault).
func (c *cluster) container(service string) string {
	c.t.Helper()
	if id, ok := c.ids[service]; ok {
		return id
	}
	id := strings.TrimSpace(c.run("compose ps "+service, append(c.compose, "ps", "-q", service)...))
	if id == "" || strings.Contains(id, "\n") {
		c.t.Fatalf("service %s: want one container, got %q", service, id)
	}
	c.ids[service] = id
	return id
}

func (c *cluster) hostPort(service string, port int) string {
	c.t.Helper()
	out := strings.TrimSpace(c.run("docker port", "docker", "port", c.container(service), fmt.Sprint(port)))
	return strings.Fields(out)[0]
}

// waitHealthy waits until every container of the project is healthy, or
// exited 0 for the one-shot demo-data service.
func (c *cluster) waitHealthy(limit time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		out := c.run("docker ps", "docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+c.project)
		ids := strings.Fields(out)
		args := append([]string{"docker", "inspect", "--format",
			`{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}`}, ids...)
		var pending []string
		for _, line := range strings.Split(strings.TrimSpace(c.run("docker inspect", args...)), "\n") {
			f := strings.Fields(line)
			if len(f) != 4 {
				continue
			}
			switch {
			case f[1] == "running" && (f[2] == "healthy" || f[2] == "none"):
			case f[1] == "exited" && f[3] == "0" && f[0] == "demo-data":
			case f[1] == "exited":
				c.t.Fatalf("service %s exited with code %s", f[0], f[3])
			default:
				pending = append(pending, f[0]+" "+f[1]+"/"+f[2])
			}
		}
		if len(ids) > 0 && len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("not healthy after %v: %v", limit, pending)
		}
		time.Sleep(time.Second)
	}
}

// coordinatorStatus asks one coordinator who it is and who leads.
func (c *cluster) coordinatorStatus(service string) (*api.CoordinatorStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.coords[service]+"/v1/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st api.CoordinatorStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s /v1/status: %w", service, err)
	}
	return &st, nil
}

// leader returns the service name of the raft leader as the given services
// agree on it, waiting up to limit for one.
func (c *cluster) leader(services []string, limit time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		for _, s := range services {
			st, err := c.coordinatorStatus(s)
			if err == nil && st.RaftState == "Leader" {
				return s
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no raft leader among %v after %v", services, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// registeredWorkers is how many workers the leader knows.
func (c *cluster) registeredWorkers() int {
	for _, s := range coordinators {
		if st, err := c.coordinatorStatus(s); err == nil && st.RaftState == "Leader" {
			return st.Workers
		}
	}
	return -1
}

// jobStatus reads the job's status straight from etcd (nil while absent).
func (c *cluster) jobStatus(ctx context.Context, id string) (*api.JobStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := c.etcd.Get(ctx, api.JobStatusKey(id))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return api.DecodeJobStatus(resp.Kvs[0].Value)
}

// fmctl runs bin/deploy/fmctl on this host against the cluster.
func (c *cluster) fmctl(args ...string) string {
	c.t.Helper()
	return c.run("fmctl", append([]string{filepath.Join(c.root, "bin", "deploy", "fmctl")}, args...)...)
}

func (c *cluster) docker(args ...string) {
	c.t.Helper()
	c.run("docker "+args[0], append([]string{"docker"}, args...)...)
}

func (c *cluster) networkName() string { return c.project + "_" + network }
