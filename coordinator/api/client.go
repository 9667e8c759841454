package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// HTTP paths of the worker protocol and the coordinator's own endpoints.
const (
	PathRegister  = "/v1/workers/register"
	PathHeartbeat = "/v1/workers/heartbeat"
	PathReport    = "/v1/workers/report"
	PathLeave     = "/v1/workers/leave"
	PathStatus    = "/v1/status"
	// Raft membership (operators; answered by the leader).
	PathAddVoter     = "/v1/raft/add-voter"
	PathRemoveServer = "/v1/raft/remove-server"
	PathHealthz      = "/healthz"
	PathReadyz       = "/readyz"
	PathMetrics      = "/metrics"
)

// ErrUnknownWorker means the coordinator does not know the worker (it never
// registered, or was declared lost): register again.
var ErrUnknownWorker = errors.New("api: coordinator does not know this worker; register again")

// ErrUnavailable means no coordinator answered with a leader within the
// client's retry window; the caller retries later.
var ErrUnavailable = errors.New("api: no coordinator leader reachable")

// ClientOptions configures a Client. Only Endpoints is required.
type ClientOptions struct {
	// Endpoints are coordinator base URLs ("http://c0:7070"); any replica
	// works, followers forward to the leader.
	Endpoints []string
	// RequestTimeout bounds one HTTP request (default 5 s).
	RequestTimeout time.Duration
	// RetryFor is how long a call keeps trying the endpoints in turn while
	// they are unreachable or have no leader (default 10 s). The call's
	// context can end it sooner.
	RetryFor time.Duration
	// HTTPClient is used when set (tests, TLS); otherwise a default one.
	HTTPClient *http.Client
}

// Client calls the worker protocol. It is safe for concurrent use.
type Client struct {
	opts ClientOptions
	hc   *http.Client

	mu   sync.Mutex
	next int // index of the endpoint that answered last
}

// NewClient checks opts and returns a Client.
func NewClient(opts ClientOptions) (*Client, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("api: ClientOptions.Endpoints is empty (want coordinator URLs such as http://c0:7070)")
	}
	eps := make([]string, len(opts.Endpoints))
	for i, e := range opts.Endpoints {
		e = strings.TrimRight(strings.TrimSpace(e), "/")
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			e = "http://" + e
		}
		eps[i] = e
	}
	opts.Endpoints = eps
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 5 * time.Second
	}
	if opts.RetryFor <= 0 {
		opts.RetryFor = 10 * time.Second
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{opts: opts, hc: hc}, nil
}

// Register announces the worker.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (*RegisterResponse, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	var resp RegisterResponse
	return &resp, c.call(ctx, PathRegister, req, &resp)
}

// Heartbeat says the worker is alive and returns its current assignment.
// ErrUnknownWorker means: register again.
func (c *Client) Heartbeat(ctx context.Context, req HeartbeatRequest) (*HeartbeatResponse, error) {
	var resp HeartbeatResponse
	return &resp, c.call(ctx, PathHeartbeat, req, &resp)
}

// Report tells the coordinator about a checkpoint, progress, a failure or
// the end of the job.
func (c *Client) Report(ctx context.Context, r Report) (*ReportResponse, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	var resp ReportResponse
	return &resp, c.call(ctx, PathReport, r, &resp)
}

// Leave announces an orderly shutdown; the worker's generation is re-formed
// without it.
func (c *Client) Leave(ctx context.Context, req LeaveRequest) error {
	var resp LeaveResponse
	return c.call(ctx, PathLeave, req, &resp)
}

// Status asks the first replica that answers who it is and who leads. Unlike
// the worker calls it does not need a leader.
func (c *Client) Status(ctx context.Context) (*CoordinatorStatus, error) {
	var lastErr error
	for _, ep := range c.opts.Endpoints {
		var st CoordinatorStatus
		err := c.once(ctx, http.MethodGet, ep+PathStatus, nil, &st)
		if err == nil {
			return &st, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// retryable marks errors worth trying the next endpoint for.
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

// call POSTs in to path on the endpoints in turn, starting with the one that
// answered last, until one answers or RetryFor has passed.
func (c *Client) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("api: encoding %s request: %w", path, err)
	}
	deadline := time.Now().Add(c.opts.RetryFor)
	backoff := 20 * time.Millisecond
	c.mu.Lock()
	start := c.next
	c.mu.Unlock()
	var lastErr error
	for attempt := 0; ; attempt++ {
		i := (start + attempt) % len(c.opts.Endpoints)
		err := c.once(ctx, http.MethodPost, c.opts.Endpoints[i]+path, body, out)
		if err == nil {
			c.mu.Lock()
			c.next = i
			c.mu.Unlock()
			return nil
		}
		var r retryable
		if !errors.As(err, &r) {
			return err
		}
		lastErr = err
		if (attempt+1)%len(c.opts.Endpoints) != 0 {
			continue // try the next replica at once
		}
		if time.Now().Add(backoff).After(deadline) {
			return fmt.Errorf("%w: %s: %v", ErrUnavailable, path, lastErr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("api: %s: %w (last error: %v)", path, ctx.Err(), lastErr)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (c *Client) once(ctx context.Context, method, url string, body []byte, out any) error {
	rctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(rctx, method, url, rd)
	if err != nil {
		return fmt.Errorf("api: building request to %s: %w", url, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("api: %s %s: %w", method, url, ctx.Err())
		}
		return retryable{fmt.Errorf("api: %s %s: %w", method, url, err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return retryable{fmt.Errorf("api: reading answer of %s: %w", url, err)}
	}
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("api: decoding answer of %s: %w", url, err)
		}
		return nil
	}
	var e ErrorResponse
	_ = json.Unmarshal(data, &e) // a proxy's HTML error page leaves e empty
	if e.Error == "" {
		e.Error = strings.TrimSpace(string(data))
	}
	switch {
	case e.Code == CodeUnknownWorker:
		return ErrUnknownWorker
	case resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusBadGateway ||
		resp.StatusCode == http.StatusGatewayTimeout:
		return retryable{fmt.Errorf("api: %s: %s (%s)", url, resp.Status, e.Error)}
	default:
		return fmt.Errorf("api: %s: %s: %s", url, resp.Status, e.Error)
	}
}
