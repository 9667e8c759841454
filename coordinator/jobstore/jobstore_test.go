package jobstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/jobstore"
	"github.com/fmtrain/fmtrain/services/servicestest"
)

const spec = `name: my demo
min_workers: 1
max_workers: 1
model: {in_channels: 3, out_channels: 3, patch_size: 2, patch_size_t: 1, hidden_size: 32, depth: 1, num_heads: 2, mlp_ratio: 4, text_dim: 8}
flow_matching: {adapter_type: simple}
data: {manifest: m.json}
optimizer: {lr: 0.001}
step_scheduler: {global_batch_size: 4, local_batch_size: 4, max_steps: 5}
`

func TestNewJobID(t *testing.T) {
	id := jobstore.NewJobID("my demo/v2")
	if !regexp.MustCompile(`^my-demo-v2-[0-9a-f]{6}$`).MatchString(id) || api.CheckJobID(id) != nil {
		t.Fatalf("NewJobID = %q", id)
	}
	if long := jobstore.NewJobID(strings.Repeat("x", 100)); len(long) != api.MaxJobIDLen {
		t.Fatalf("long name gives %d characters", len(long))
	}
}

func TestSubmitStatusWaitCancel(t *testing.T) {
	cli := servicestest.EtcdClient(t)
	ctx := context.Background()
	if _, err := jobstore.Submit(ctx, cli, "j1", []byte(strings.Replace(spec, "max_steps: 5", "max_stepz: 5", 1))); err == nil || !strings.Contains(err.Error(), "max_stepz") {
		t.Fatalf("invalid spec: err = %v, want one naming max_stepz", err)
	}
	if _, err := jobstore.Submit(ctx, cli, "bad.id", []byte(spec)); err == nil || !strings.Contains(err.Error(), `'.'`) {
		t.Fatalf("bad id: err = %v", err)
	}
	if _, err := jobstore.Submit(ctx, cli, "j1", []byte(spec)); err != nil {
		t.Fatal(err)
	}
	if _, err := jobstore.Submit(ctx, cli, "j1", []byte(spec)); !errors.Is(err, jobstore.ErrJobExists) {
		t.Fatalf("resubmit: err = %v, want ErrJobExists", err)
	}
	st, err := jobstore.Status(ctx, cli, "j1")
	if err != nil || st.State != api.JobSubmitted || st.Name != "my demo" {
		t.Fatalf("status before the coordinator saw it: %+v %v", st, err)
	}
	if _, err := jobstore.Status(ctx, cli, "j"); !errors.Is(err, jobstore.ErrNoSuchJob) {
		t.Fatalf("status of a prefix of an id: %v, want ErrNoSuchJob", err)
	}

	// Wait sees statuses written after it started, up to a terminal one.
	got := make(chan *api.JobStatus, 1)
	go func() {
		st, err := jobstore.Wait(ctx, cli, "j1", func(*api.JobStatus) bool { return false })
		if err != nil {
			t.Error(err)
		}
		got <- st
	}()
	time.Sleep(50 * time.Millisecond)
	for i, state := range []api.JobState{api.JobRunning, api.JobFinished} {
		b := fmt.Sprintf(`{"version":%d,"job_id":"j1","state":%q,"step":%d}`, i+1, state, 5*i)
		if _, err := cli.Put(ctx, api.JobStatusKey("j1"), b); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case st := <-got:
		if st.State != api.JobFinished || st.Step != 5 {
			t.Fatalf("Wait returned %+v", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return")
	}

	if err := jobstore.Cancel(ctx, cli, "j1", ""); err != nil {
		t.Fatal(err)
	}
	r, err := cli.Get(ctx, api.JobCancelKey("j1"))
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "cancelled by user" {
		t.Fatalf("cancel key: %v %v", r, err)
	}
	if err := jobstore.Cancel(ctx, cli, "nope", ""); !errors.Is(err, jobstore.ErrNoSuchJob) {
		t.Fatalf("cancel unknown: %v", err)
	}

	if _, err := jobstore.Submit(ctx, cli, "j2", []byte(spec)); err != nil {
		t.Fatal(err)
	}
	all, err := jobstore.List(ctx, cli)
	if err != nil || len(all) != 2 || all[0].JobID != "j1" || all[0].State != api.JobFinished || all[1].State != api.JobSubmitted {
		t.Fatalf("List: %v %+v", err, all)
	}
	var buf bytes.Buffer
	if err := jobstore.WriteTable(&buf, all, time.Now()); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(buf.String()), "\n"); len(lines) != 3 || !strings.Contains(lines[1], "finished") {
		t.Fatalf("table:\n%s", buf.String())
	}
}

func TestWriteStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	st := &api.JobStatus{JobID: "j", Name: "demo", State: api.JobRunning, Step: 40, MaxSteps: 100, Generation: 3,
		Workers: []string{"a", "b"}, GradAccum: 2, MinWorkers: 1, MaxWorkers: 4, Restarts: 1,
		LastCheckpoint: &api.Checkpoint{Path: "/c/step_40", Checksum: "sha256:ab", Step: 40},
		StartedAt:      now.Add(-time.Minute)}
	var buf bytes.Buffer
	if err := jobstore.WriteStatus(&buf, st, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"step:        40/100", "workers:     2 (a, b), grad accumulation 2", "elastic:     1 to 4 workers",
		"checkpoint:  /c/step_40 (step 40, sha256:ab)", "started:     2026-01-01T11:59:00Z (1m0s ago)"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("no %q in\n%s", want, buf.String())
		}
	}
}
