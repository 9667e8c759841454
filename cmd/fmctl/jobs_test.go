package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/services/servicestest"
)

// runFmctl runs the fmctl command line in-process and returns its output.
func runFmctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// TestJobCommands drives submit, list, status and cancel against a real
// (embedded) etcd; the coordinator's side is tested in package coordinator.
func TestJobCommands(t *testing.T) {
	ep := servicestest.StartEtcd(t).Endpoints()[0]
	dir := t.TempDir()
	good := filepath.Join(dir, "job.yaml")
	spec := `name: demo
min_workers: 1
max_workers: 1
model: {in_channels: 3, out_channels: 3, patch_size: 2, patch_size_t: 1, hidden_size: 32, depth: 1, num_heads: 2, mlp_ratio: 4, text_dim: 8}
flow_matching: {adapter_type: simple}
data: {manifest: m.json}
optimizer: {lr: 0.001}
step_scheduler: {global_batch_size: 4, local_batch_size: 4, max_steps: 5}
`
	if err := os.WriteFile(good, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(spec, "max_workers: 1", "max_workers: 0", 1)), 0o644); err != nil {
		t.Fatal(err)
	}

	if out, err := runFmctl(t, "submit", bad, "--etcd-endpoints", ep); err == nil || !strings.Contains(err.Error(), "max_workers") {
		t.Fatalf("submit of an invalid spec: %v\n%s", err, out)
	}
	out, err := runFmctl(t, "submit", good, "--etcd-endpoints", ep)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out)
	if !strings.HasPrefix(id, "demo-") {
		t.Fatalf("submit printed %q, want the job id", out)
	}
	if _, err := runFmctl(t, "submit", good, "--id", id, "--etcd-endpoints", ep); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("submit under an existing id: %v", err)
	}
	if out, err := runFmctl(t, "list", "--etcd-endpoints", ep); err != nil || !strings.Contains(out, id) || !strings.Contains(out, "submitted") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if out, err := runFmctl(t, "status", id, "--json", "--etcd-endpoints", ep); err != nil || !strings.Contains(out, `"state": "submitted"`) {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if out, err := runFmctl(t, "cancel", id, "--etcd-endpoints", ep); err != nil || !strings.Contains(out, "cancel of "+id) {
		t.Fatalf("cancel: %v\n%s", err, out)
	}
	if _, err := runFmctl(t, "status", "nope", "--etcd-endpoints", ep); err == nil || !strings.Contains(err.Error(), "no such job") {
		t.Fatalf("status of an unknown job: %v", err)
	}
}
