package worker

import (
	"context"
	"errors"
	"time"

	"github.com/fmtrain/fmtrain/collective"
	"github.com/fmtrain/fmtrain/coordinator/api"
)

// errStopped is how a generation that was asked to stop at a step boundary
// (drain) ends; nothing is reported for it (the worker leaves instead).
var errStopped = errors.New("worker: generation stopped at a step boundary")

// fatalError marks a failure no new generation can fix (a bad spec, a
// missing dataset, a corrupt shard, an unreadable checkpoint): the
// coordinator fails the job instead of re-forming it.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// fatal wraps err as a fatalError (nil stays nil).
func fatal(err error) error {
	if err == nil {
		return nil
	}
	return &fatalError{err}
}

// lostPeer names the worker a collective failure lost (from the ring's
// PeerLostError and the assignment's rank order), so the coordinator can
// declare it lost after a few missed heartbeats instead of the whole
// timeout; "" when the error names no peer.
func lostPeer(err error, a *api.Assignment) string {
	var pl *collective.PeerLostError
	if !errors.As(err, &pl) || pl.Peer < 0 || pl.Peer >= len(a.Workers) || pl.Peer == a.Rank {
		return ""
	}
	return a.Workers[pl.Peer]
}

func isFatal(err error) bool {
	var f *fatalError
	return errors.As(err, &f)
}

// reportEnd tells the coordinator how a generation ended: finished (every
// rank reports it; the first one wins), failed (fatal or not), or nothing
// when it was stopped or superseded.
func (w *Worker) reportEnd(ctx context.Context, r genResult) {
	rep := api.Report{WorkerID: w.opts.ID, JobID: r.a.JobID, Generation: r.a.Generation, Step: r.step}
	switch {
	case r.err == nil:
		rep.Kind = api.ReportFinished
		w.log().Info("generation finished the job", "job", r.a.JobID, "generation", r.a.Generation, "step", r.step)
	case errors.Is(r.err, errStopped), errors.Is(r.err, context.Canceled) && ctx.Err() == nil:
		w.log().Info("generation stopped", "job", r.a.JobID, "generation", r.a.Generation, "step", r.step, "why", r.err)
		return
	case ctx.Err() != nil:
		return // the worker itself is going away
	default:
		rep.Kind, rep.Error, rep.Fatal = api.ReportFailed, r.err.Error(), isFatal(r.err)
		rep.LostPeer = lostPeer(r.err, r.a)
		w.log().Warn("generation failed", "job", r.a.JobID, "generation", r.a.Generation, "step", r.step, "fatal", rep.Fatal, "err", r.err)
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := w.opts.Coordinator.Report(rctx, rep); err != nil {
		w.log().Warn("report to the coordinator failed", "kind", rep.Kind, "err", err)
	}
}
