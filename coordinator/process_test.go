package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/jobstore"
	"github.com/fmtrain/fmtrain/services/servicestest"
)

// TestProcessLeaderKill runs three fm-coordinator processes (built by the
// test) against a real etcd, kills the raft leader with SIGKILL, and checks
// that a new leader takes over the running job without re-forming it,
// finishes it, and that the killed replica rejoins as a follower.
func TestProcessLeaderKill(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fm-coordinator")
	began := time.Now()
	build := exec.Command("go", "build", "-o", bin, "github.com/fmtrain/fmtrain/cmd/fm-coordinator")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building fm-coordinator: %v\n%s", err, out)
	}
	t.Logf("built fm-coordinator in %v", time.Since(began).Round(time.Millisecond))
	cli := servicestest.EtcdClient(t)
	etcdURL := cli.Endpoints()[0]

	const size = 3
	raftPorts, httpPorts := freePorts(t, size), freePorts(t, size)
	var peers []string
	for i := range size {
		peers = append(peers, fmt.Sprintf("c%d=127.0.0.1:%d", i, raftPorts[i]))
	}
	dataDir := t.TempDir()
	args := func(i int) []string {
		return []string{
			"--id", fmt.Sprintf("c%d", i), "--data-dir", filepath.Join(dataDir, fmt.Sprint(i)),
			"--raft-addr", fmt.Sprintf("127.0.0.1:%d", raftPorts[i]), "--peers", strings.Join(peers, ","),
			"--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPorts[i]),
			"--http-advertise", fmt.Sprintf("http://127.0.0.1:%d", httpPorts[i]),
			"--etcd-endpoints", etcdURL, "--heartbeat-interval", testHeartbeatInterval.String(),
			"--heartbeat-timeout", testHeartbeatTimeout.String(), "--log-level", "error",
		}
	}
	procs := make([]*exec.Cmd, size)
	start := func(i int) {
		cmd := exec.Command(bin, args(i)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = cmd
	}
	for i := range size {
		start(i)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if p != nil && p.ProcessState == nil {
				_ = p.Process.Signal(syscall.SIGTERM)
				_ = p.Wait()
			}
		}
	})
	urls := make([]string, size)
	for i := range size {
		urls[i] = fmt.Sprintf("http://127.0.0.1:%d", httpPorts[i])
	}
	leaderOf := func(skip int) int {
		leader := -1
		checkFor(t, 30*time.Second, "a ready leader among the processes", func() error {
			for i, u := range urls {
				if i == skip {
					continue
				}
				st, err := coordStatus(u)
				if err != nil {
					return err
				}
				if st.RaftState == "Leader" && st.Ready {
					leader = i
					return nil
				}
			}
			return fmt.Errorf("no ready leader yet")
		})
		return leader
	}
	lead := leaderOf(-1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w0, w1 := newSimWorker(t, "w0", urls...), newSimWorker(t, "w1", urls...)
	go w0.run(ctx, t)
	go w1.run(ctx, t)
	if _, err := jobstore.Submit(ctx, cli, "mp", testSpec("mp", 2, 2, 8, 2, 50)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cli, "mp", 20*time.Second, "running on two workers", func(s *api.JobStatus) bool {
		return s.State == api.JobRunning && len(s.Workers) == 2
	})
	ws := []*simWorker{w0, w1}
	checkFor(t, 10*time.Second, "workers hold the generation", func() error { return sameGeneration(ws, "mp", st.Generation) })
	workerWithRank(ws, 0).report(t, api.ReportCheckpoint, 10, nil)

	if err := procs[lead].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = procs[lead].Wait()
	killedAt := time.Now()
	newLead := leaderOf(lead)
	t.Logf("killed leader c%d; c%d ready as leader after %v", lead, newLead, time.Since(killedAt).Round(time.Millisecond))

	time.Sleep(testHeartbeatTimeout + 500*time.Millisecond)
	if err := sameGeneration(ws, "mp", st.Generation); err != nil {
		t.Fatalf("after the leader was killed: %v", err)
	}
	if r := workerWithRank(ws, 1).report(t, api.ReportFinished, 50, nil); !r.Accepted {
		t.Fatal("finished report not accepted by the new leader")
	}
	fin := waitStatus(t, cli, "mp", 10*time.Second, "finished", func(s *api.JobStatus) bool { return s.State == api.JobFinished })
	if fin.Generation != st.Generation || fin.Restarts != 0 || fin.LastCheckpoint == nil || fin.LastCheckpoint.Step != 10 {
		t.Fatalf("final status %+v", fin)
	}

	// The killed replica restarts from its data dir and follows.
	t.Logf("job finished after %v", time.Since(killedAt).Round(time.Millisecond))
	start(lead)
	checkFor(t, 30*time.Second, "restarted replica follows and catches up", func() error {
		st, err := coordStatus(urls[lead])
		if err != nil {
			return err
		}
		leaderSt, err := coordStatus(urls[newLead])
		if err != nil {
			return err
		}
		if st.RaftState != "Follower" || !st.Ready || st.AppliedIndex < leaderSt.AppliedIndex-5 || st.Jobs != 1 {
			return fmt.Errorf("restarted: %+v; leader: %+v", st, leaderSt)
		}
		return nil
	})
}

func coordStatus(url string) (*api.CoordinatorStatus, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url + api.PathStatus)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st api.CoordinatorStatus
	return &st, json.NewDecoder(resp.Body).Decode(&st)
}

// freePorts asks the kernel for n free loopback ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
