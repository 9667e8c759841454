package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
)

// replica serves the heartbeat path with a fixed status and counts calls.
func replica(t *testing.T, code int, body any) (*httptest.Server, *atomic.Int32) {
	var calls atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(s.Close)
	return s, &calls
}

func TestClientTriesTheNextReplica(t *testing.T) {
	down, downCalls := replica(t, http.StatusServiceUnavailable, api.ErrorResponse{Error: "no leader", Code: api.CodeNoLeader})
	up, upCalls := replica(t, http.StatusOK, api.HeartbeatResponse{Assignment: &api.Assignment{JobID: "j", Generation: 2}})
	c, err := api.NewClient(api.ClientOptions{Endpoints: []string{down.URL, strings.TrimPrefix(up.URL, "http://")}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		resp, err := c.Heartbeat(context.Background(), api.HeartbeatRequest{WorkerID: "w"})
		if err != nil || resp.Assignment == nil || resp.Assignment.Generation != 2 {
			t.Fatalf("heartbeat: %+v %v", resp, err)
		}
	}
	// The second call went straight to the replica that answered.
	if downCalls.Load() != 1 || upCalls.Load() != 2 {
		t.Fatalf("calls: down %d up %d; want 1 and 2", downCalls.Load(), upCalls.Load())
	}
}

func TestClientErrors(t *testing.T) {
	unknown, _ := replica(t, http.StatusNotFound, api.ErrorResponse{Error: "who?", Code: api.CodeUnknownWorker})
	bad, badCalls := replica(t, http.StatusBadRequest, api.ErrorResponse{Error: "report: kind \"x\" is not ...", Code: api.CodeBadRequest})
	down, _ := replica(t, http.StatusServiceUnavailable, api.ErrorResponse{Error: "no leader", Code: api.CodeNoLeader})
	ctx := context.Background()

	c, _ := api.NewClient(api.ClientOptions{Endpoints: []string{unknown.URL}})
	if _, err := c.Heartbeat(ctx, api.HeartbeatRequest{WorkerID: "w"}); !errors.Is(err, api.ErrUnknownWorker) {
		t.Fatalf("404 unknown_worker: %v", err)
	}
	c, _ = api.NewClient(api.ClientOptions{Endpoints: []string{bad.URL, down.URL}})
	if _, err := c.Heartbeat(ctx, api.HeartbeatRequest{WorkerID: "w"}); err == nil || !strings.Contains(err.Error(), `kind "x"`) || badCalls.Load() != 1 {
		t.Fatalf("400: err %v after %d calls; want the server's message, no retry", err, badCalls.Load())
	}
	c, _ = api.NewClient(api.ClientOptions{Endpoints: []string{down.URL}, RetryFor: 200 * time.Millisecond})
	start := time.Now()
	if _, err := c.Heartbeat(ctx, api.HeartbeatRequest{WorkerID: "w"}); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("all replicas 503: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %v, RetryFor is 200ms", d)
	}
	if _, err := api.NewClient(api.ClientOptions{}); err == nil {
		t.Fatal("NewClient without endpoints succeeded")
	}
	// Client-side validation names the field and sends nothing.
	if _, err := c.Report(ctx, api.Report{WorkerID: "w", JobID: "j", Generation: 1, Kind: api.ReportCheckpoint}); err == nil || !strings.Contains(err.Error(), "checkpoint.path") {
		t.Fatalf("checkpoint report without a path: %v", err)
	}
}

func TestJobKeys(t *testing.T) {
	id, suffix, err := api.ParseJobKey(api.JobStatusKey("demo-1"))
	if err != nil || id != "demo-1" || suffix != api.StatusKeySuffix {
		t.Fatalf("ParseJobKey(status key) = %q %q %v", id, suffix, err)
	}
	for _, bad := range []string{"/fmtrain/jobs/x", "/other/jobs/x/spec", "/fmtrain/jobs//spec", "/fmtrain/jobs/x/a/b"} {
		if _, _, err := api.ParseJobKey(bad); err == nil {
			t.Errorf("ParseJobKey(%q) accepted", bad)
		}
	}
	if api.JobSpecKey("j") != "/fmtrain/jobs/j/spec" || api.JobCancelKey("j") != "/fmtrain/jobs/j/cancel" {
		t.Fatal("key layout changed; update docs/architecture.md and every reader")
	}
}

func TestDurationJSON(t *testing.T) {
	b, _ := json.Marshal(api.RegisterResponse{HeartbeatInterval: api.Duration(1500 * time.Millisecond)})
	if !strings.Contains(string(b), `"heartbeat_interval":"1.5s"`) {
		t.Fatalf("encoded %s", b)
	}
	var r api.RegisterResponse
	if err := json.Unmarshal(b, &r); err != nil || time.Duration(r.HeartbeatInterval) != 1500*time.Millisecond {
		t.Fatalf("decoded %+v %v", r, err)
	}
}
