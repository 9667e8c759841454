package train

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fmtrain/fmtrain/checkpoint"
	"github.com/fmtrain/fmtrain/data"
	"github.com/fmtrain/fmtrain/jobspec"
)

// testData writes a small synthetic dataset once per test.
func testData(t *testing.T) (string, *data.Dataset) {
	t.Helper()
	dir := t.TempDir()
	if _, err := data.Synth(dir, data.SynthOptions{NumSamples: 96, NumShards: 2, Size: 8, TextLen: 4, TextDim: 8, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(dir, data.SynthManifestName)
	ds, err := data.Open(manifest, data.OpenOptions{Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	return manifest, ds
}

func testSpec(t *testing.T, manifest, ckdir, extra string) *jobspec.Spec {
	t.Helper()
	y := fmt.Sprintf(`
seed: 5
max_workers: 2
model: {in_channels: 3, out_channels: 3, patch_size: 2, patch_size_t: 1, hidden_size: 16, depth: 1, num_heads: 1, mlp_ratio: 2, text_dim: 8}
flow_matching: {timestep_sampling: logit_normal, flow_shift: 1.0}
data: {manifest: %q}
optimizer: {lr: 0.02}
lr_scheduler: {lr_decay_style: cosine, lr_warmup_steps: 2}
ema: {decay: 0.9}
step_scheduler: {global_batch_size: 8, local_batch_size: 4, max_steps: 12, ckpt_every_steps: 5, log_every_steps: 3}
checkpoint: {checkpoint_dir: %q, keep_last: 0}
%s`, manifest, ckdir, extra)
	s, err := jobspec.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTrainer(t *testing.T, o Options) *Trainer {
	t.Helper()
	if o.Net == nil {
		o.Net = newLinearNet(3, 3, 8, 11)
	}
	o.Logger = slog.New(slog.DiscardHandler)
	tr, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestLossFalls(t *testing.T) {
	manifest, ds := testData(t)
	spec := testSpec(t, manifest, t.TempDir(), "")
	spec.StepScheduler.MaxSteps = 40
	spec.Checkpoint.Enabled = false
	var losses []float64
	var logged []int64
	tr := newTrainer(t, Options{Spec: spec, Data: ds, OnStep: func(m Metrics) { losses = append(losses, m.Loss) },
		OnMetrics: func(m Metrics) { logged = append(logged, m.Step) }})
	res, err := tr.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Step != 40 || len(losses) != 40 {
		t.Fatalf("ran %d steps, %d losses", res.Step, len(losses))
	}
	first, last := mean(losses[:5]), mean(losses[35:])
	if !(last < 0.8*first) {
		t.Errorf("loss did not fall: first five %.4f, last five %.4f", first, last)
	}
	if want := []int64{3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 40}; !slices.Equal(logged, want) {
		t.Errorf("metrics at steps %v, want %v", logged, want)
	}
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// N steps straight and K steps + checkpoint + a new trainer resuming + N−K
// steps give bit-identical weights, moments and EMA.
func TestResumeIsExact(t *testing.T) {
	manifest, ds := testData(t)
	straightDir, splitDir := t.TempDir(), t.TempDir()
	straight := newTrainer(t, Options{Spec: testSpec(t, manifest, straightDir, ""), Data: ds, WriteCheckpoints: true})
	if _, err := straight.Run(context.Background()); err != nil {
		t.Fatal(err)
	}

	spec := testSpec(t, manifest, splitDir, "")
	first := newTrainer(t, Options{Spec: spec, Data: ds, WriteCheckpoints: true})
	for first.CurrentStep() < 7 {
		if _, err := first.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	info, err := first.SaveCheckpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ck := info.Path
	if info.Step != 7 || info.DataPosition != 56 || len(info.Checksum) != 64 || filepath.Base(ck) != "step_00000007" {
		t.Fatalf("checkpoint info %+v", info)
	}
	if again, err := first.SaveCheckpoint(context.Background()); err != nil || again != info {
		t.Fatalf("second SaveCheckpoint at the same step: %+v, %v (want the same checkpoint)", again, err)
	}
	// A fresh process: new net (other init), same spec, resume from the checkpoint.
	second := newTrainer(t, Options{Spec: spec, Data: ds, Net: newLinearNet(3, 3, 8, 999), ResumeFrom: ck, WriteCheckpoints: true})
	if second.CurrentStep() != 7 {
		t.Fatalf("resumed at step %d", second.CurrentStep())
	}
	if _, err := second.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(straight.Net().Params(), second.Net().Params()) {
		t.Fatal("weights differ between the straight and the resumed run")
	}
	if !slices.Equal(straight.EMA(), second.EMA()) || !slices.Equal(straight.adam.M, second.adam.M) || !slices.Equal(straight.adam.V, second.adam.V) {
		t.Fatal("EMA or AdamW moments differ")
	}
	// restore_from: latest picks up the final checkpoint of the split run.
	spec.Checkpoint.RestoreFrom = "latest"
	third := newTrainer(t, Options{Spec: spec, Data: ds, Net: newLinearNet(3, 3, 8, 5)})
	if third.CurrentStep() != 12 || !slices.Equal(third.Net().Params(), straight.Net().Params()) {
		t.Fatalf("latest resumed at %d", third.CurrentStep())
	}
	cks, _ := checkpoint.List(splitDir)
	var names []string
	for _, c := range cks {
		names = append(names, filepath.Base(c))
	}
	if want := []string{"step_00000007", "step_00000010", "step_00000012"}; !slices.Equal(names, want) {
		t.Errorf("checkpoints %v, want %v", names, want)
	}
}

func maxRelDiff(a, b []float32) float64 {
	worst := 0.0
	for i := range a {
		d := math.Abs(float64(a[i]-b[i])) / math.Max(1e-3, math.Abs(float64(b[i])))
		worst = math.Max(worst, d)
	}
	return worst
}

// memReducer averages gradient buffers of in-process ranks: each rank's
// Wait blocks until every rank has handed over its whole buffer.
type memReducer struct {
	mu      sync.Mutex
	cond    *sync.Cond
	bufs    [][]float32
	ready   []int
	round   int
	arrived int
}

func newMemReducer(bufs [][]float32) *memReducer {
	r := &memReducer{bufs: bufs, ready: make([]int, len(bufs))}
	r.cond = sync.NewCond(&r.mu)
	return r
}

type rankReducer struct {
	r    *memReducer
	rank int
}

func (rr rankReducer) Ready(lo, hi int) {
	rr.r.mu.Lock()
	rr.r.ready[rr.rank] += hi - lo
	rr.r.mu.Unlock()
}

func (rr rankReducer) Wait(ctx context.Context) error {
	r := rr.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ready[rr.rank] != len(r.bufs[rr.rank]) {
		return fmt.Errorf("rank %d handed over %d of %d gradients", rr.rank, r.ready[rr.rank], len(r.bufs[rr.rank]))
	}
	round := r.round
	r.arrived++
	if r.arrived == len(r.bufs) {
		n := float32(len(r.bufs))
		for i := range r.bufs[0] {
			var s float32
			for _, b := range r.bufs {
				s += b[i]
			}
			for _, b := range r.bufs {
				b[i] = s / n
			}
		}
		r.arrived = 0
		clear(r.ready)
		r.round++
		r.cond.Broadcast()
		return nil
	}
	for r.round == round {
		r.cond.Wait()
	}
	return nil
}

// Two ranks with a reducer (one micro-batch each) make the same steps as
// one rank accumulating both micro-batches: the same gradient (so
// accumulation averages, as the reducer does) and the same weights on every
// rank.
func TestTwoRanksMatchOne(t *testing.T) {
	manifest, ds := testData(t)
	spec := func() *jobspec.Spec {
		s := testSpec(t, manifest, t.TempDir(), "")
		s.StepScheduler.MaxSteps = 4
		s.Checkpoint.Enabled = false
		s.ClipGradNorm.MaxNorm = 0 // keep the raw gradient for the comparison
		return s
	}
	one := newTrainer(t, Options{Spec: spec(), Data: ds})
	nets := []*linearNet{newLinearNet(3, 3, 8, 11), newLinearNet(3, 3, 8, 11)}
	red := newMemReducer([][]float32{nets[0].Grads(), nets[1].Grads()})
	ranks := make([]*Trainer, 2)
	for r := range ranks {
		ranks[r] = newTrainer(t, Options{Spec: spec(), Data: ds, Net: nets[r], Rank: r, World: 2, Reducer: rankReducer{red, r}})
	}
	parallel := func(f func(tr *Trainer) error) {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for r, tr := range ranks {
			wg.Add(1)
			go func() { defer wg.Done(); errs[r] = f(tr) }()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	step := func(tr *Trainer) error { _, err := tr.Step(context.Background()); return err }
	if err := step(one); err != nil {
		t.Fatal(err)
	}
	parallel(step)
	if d := maxRelDiff(nets[0].Grads(), one.Net().Grads()); d > 1e-5 {
		t.Fatalf("reduced gradient differs from the accumulated one by %g", d)
	}
	if _, err := one.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	parallel(func(tr *Trainer) error { _, err := tr.Run(context.Background()); return err })
	if !slices.Equal(nets[0].Params(), nets[1].Params()) {
		t.Fatal("ranks diverged")
	}
	if d := maxRelDiff(nets[0].Params(), one.Net().Params()); d > 1e-4 {
		t.Errorf("two ranks differ from one by %g", d)
	}
}

func TestStopAtStepBoundary(t *testing.T) {
	manifest, ds := testData(t)
	stop := make(chan struct{})
	spec := testSpec(t, manifest, t.TempDir(), "")
	spec.Checkpoint.Enabled = false
	tr := newTrainer(t, Options{Spec: spec, Data: ds, Stop: stop, OnStep: func(m Metrics) {
		if m.Step == 3 {
			close(stop)
		}
	}})
	res, err := tr.Run(context.Background())
	if !errors.Is(err, ErrStopped) || res.Step != 3 || tr.CurrentStep() != 3 {
		t.Fatalf("got %v at step %d", err, res.Step)
	}
}

// TestMetricsSurviveFailedAveraging: a peer lost between a step's optimizer
// update and the averaging of its loss must not drop the step's metrics —
// the step is done (and the worker checkpoints it), so it is reported with
// this rank's loss, marked local, and the error still ends the run.
func TestMetricsSurviveFailedAveraging(t *testing.T) {
	manifest, ds := testData(t)
	spec := testSpec(t, manifest, t.TempDir(), "")
	spec.Checkpoint.Enabled = false
	lost := errors.New("peer lost")
	var logged []Metrics
	tr := newTrainer(t, Options{Spec: spec, Data: ds,
		AverageScalars: func(_ context.Context, v []float32) error {
			if len(logged) == 1 {
				return lost
			}
			v[0], v[1] = 7, 8 // the "average" differs from any rank's loss
			return nil
		},
		OnMetrics: func(m Metrics) { logged = append(logged, m) },
	})
	res, err := tr.Run(context.Background())
	if !errors.Is(err, lost) {
		t.Fatalf("Run returned %v, want the averaging error", err)
	}
	if res.Step != 6 || len(logged) != 2 {
		t.Fatalf("stopped at step %d with %d metrics, want step 6 and 2 (log_every_steps 3)", res.Step, len(logged))
	}
	if m := logged[0]; m.Step != 3 || m.LocalLoss || m.Loss != 7 || m.UnweightedLoss != 8 {
		t.Errorf("first metrics %+v: want step 3, averaged loss 7/8", m)
	}
	if m := logged[1]; m.Step != 6 || !m.LocalLoss || m.Loss == 7 || m.Loss != res.Loss || m.Loss <= 0 {
		t.Errorf("second metrics %+v: want step 6 with this rank's loss %v, marked local", m, res.Loss)
	}
}

func TestNewRejects(t *testing.T) {
	manifest, ds := testData(t)
	spec := testSpec(t, manifest, t.TempDir(), "")
	if _, err := New(context.Background(), Options{Spec: spec, Data: ds, Net: newLinearNet(3, 3, 8, 1), World: 2}); err == nil {
		t.Error("world size 2 without a reducer accepted")
	}
	spec.StepScheduler.GlobalBatchSize = 200
	spec.StepScheduler.LocalBatchSize = 100
	if _, err := New(context.Background(), Options{Spec: spec, Data: ds, Net: newLinearNet(3, 3, 8, 1)}); err == nil {
		t.Error("a global batch larger than the dataset accepted")
	}
	spec = testSpec(t, manifest, t.TempDir(), "")
	spec.Model.DiT.InChannels = 4
	if _, err := New(context.Background(), Options{Spec: spec, Data: ds, Net: newLinearNet(3, 3, 8, 1)}); err == nil || !strings.Contains(err.Error(), "model.in_channels (4)") {
		t.Errorf("in_channels 4 for RGB latents: %v", err)
	}
	spec = testSpec(t, manifest, t.TempDir(), "")
	spec.Checkpoint.RestoreFrom = filepath.Join(t.TempDir(), "step_00000001")
	if _, err := New(context.Background(), Options{Spec: spec, Data: ds, Net: newLinearNet(3, 3, 8, 1)}); err == nil {
		t.Error("a missing restore_from checkpoint accepted")
	}
}

func TestTextDropoutRate(t *testing.T) {
	n := 0
	for pos := int64(0); pos < 20000; pos++ {
		if Dropped(1, pos, 0.1) {
			n++
		}
	}
	if n < 1800 || n > 2200 {
		t.Errorf("%d of 20000 dropped at p=0.1", n)
	}
}
