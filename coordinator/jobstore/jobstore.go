// Package jobstore is the user's side of the etcd job queue: submit a job
// (create-only), cancel it, read and wait for its status. fmctl, fmctl local
// and the end-to-end tests use it; the coordinator reads the same keys
// (api.JobSpecKey and friends) and writes the statuses.
//
// Every function takes a *clientv3.Client the caller owns and is safe for
// concurrent use.
package jobstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/jobspec"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrJobExists means a job with that id was submitted before.
var ErrJobExists = errors.New("jobstore: a job with this id already exists")

// ErrNoSuchJob means no spec is stored under that id.
var ErrNoSuchJob = errors.New("jobstore: no such job")

// NewJobID makes a job id from a spec name: the name reduced to the allowed
// characters, a dash and 6 random hex digits ("demo-3fa9c1").
func NewJobID(name string) string {
	var b strings.Builder
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
		if !ok {
			r = '-'
		}
		b.WriteRune(r)
	}
	base := strings.Trim(b.String(), "-")
	if base == "" {
		base = "job"
	}
	if len(base) > api.MaxJobIDLen-7 {
		base = base[:api.MaxJobIDLen-7]
	}
	var suffix [3]byte
	_, _ = rand.Read(suffix[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base + "-" + hex.EncodeToString(suffix[:])
}

// Submit validates spec and stores it under id, only if id is new. The
// returned *jobspec.Spec is the parsed spec.
func Submit(ctx context.Context, cli *clientv3.Client, id string, spec []byte) (*jobspec.Spec, error) {
	if err := api.CheckJobID(id); err != nil {
		return nil, err
	}
	parsed, err := jobspec.Parse(spec)
	if err != nil {
		return nil, err
	}
	key := api.JobSpecKey(id)
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(spec))).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("jobstore: submitting job %s: %w", id, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%w: %s (choose another id)", ErrJobExists, id)
	}
	return parsed, nil
}

// Cancel asks the coordinator to cancel job id. Cancelling a job that has
// ended changes nothing.
func Cancel(ctx context.Context, cli *clientv3.Client, id, reason string) error {
	if reason == "" {
		reason = "cancelled by user"
	}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(api.JobSpecKey(id)), ">", 0)).
		Then(clientv3.OpPut(api.JobCancelKey(id), reason)).
		Commit()
	if err != nil {
		return fmt.Errorf("jobstore: cancelling job %s: %w", id, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %s", ErrNoSuchJob, id)
	}
	return nil
}

// Status reads job id's status. A job the coordinator has not seen yet has
// State api.JobSubmitted.
func Status(ctx context.Context, cli *clientv3.Client, id string) (*api.JobStatus, error) {
	resp, err := cli.Get(ctx, api.JobsPrefix+id+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("jobstore: reading job %s: %w", id, err)
	}
	all, err := collect(resp)
	if err != nil {
		return nil, err
	}
	for _, st := range all {
		if st.JobID == id {
			return st, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNoSuchJob, id)
}

// List reads every job's status, oldest submission first.
func List(ctx context.Context, cli *clientv3.Client) ([]*api.JobStatus, error) {
	resp, err := cli.Get(ctx, api.JobsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("jobstore: listing jobs: %w", err)
	}
	return collect(resp)
}

// collect turns the keys of one or more jobs into statuses.
func collect(resp *clientv3.GetResponse) ([]*api.JobStatus, error) {
	byID := map[string]*api.JobStatus{}
	created := map[string]int64{}
	for _, kv := range resp.Kvs {
		id, suffix, err := api.ParseJobKey(string(kv.Key))
		if err != nil {
			continue // not a job key
		}
		switch suffix {
		case api.SpecKeySuffix:
			created[id] = kv.CreateRevision
			if byID[id] == nil {
				byID[id] = &api.JobStatus{JobID: id, State: api.JobSubmitted}
				if s, err := jobspec.Parse(kv.Value); err == nil {
					byID[id].Name = s.Name
				}
			}
		case api.StatusKeySuffix:
			st, err := api.DecodeJobStatus(kv.Value)
			if err != nil {
				return nil, fmt.Errorf("jobstore: job %s: %w", id, err)
			}
			byID[id] = st
		}
	}
	out := make([]*api.JobStatus, 0, len(byID))
	for id, st := range byID {
		if _, ok := created[id]; ok {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(a, b int) bool { return created[out[a].JobID] < created[out[b].JobID] })
	return out, nil
}

// Wait watches job id's status until done returns true for it (or the job
// reaches a terminal state, or ctx ends) and returns the last status seen.
func Wait(ctx context.Context, cli *clientv3.Client, id string, done func(*api.JobStatus) bool) (*api.JobStatus, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := cli.Get(ctx, api.JobStatusKey(id))
	if err != nil {
		return nil, fmt.Errorf("jobstore: reading job %s: %w", id, err)
	}
	var last *api.JobStatus
	if len(resp.Kvs) == 1 {
		if last, err = api.DecodeJobStatus(resp.Kvs[0].Value); err != nil {
			return nil, err
		}
		if done(last) || last.State.Terminal() {
			return last, nil
		}
	}
	for wr := range cli.Watch(ctx, api.JobStatusKey(id), clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return last, fmt.Errorf("jobstore: watching job %s: %w", id, err)
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			st, err := api.DecodeJobStatus(ev.Kv.Value)
			if err != nil {
				return last, err
			}
			last = st
			if done(st) || st.State.Terminal() {
				return st, nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return last, fmt.Errorf("jobstore: waiting for job %s: %w", id, err)
	}
	return last, fmt.Errorf("jobstore: watch of job %s ended", id)
}
