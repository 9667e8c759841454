// Package modeltest runs FM-DiT's reference vectors
// (shared/testdata/fm-dit, README there) against a model on any
// kernels.Backend, so every backend's tests (model's own for cpu and
// reference, kernels/cuda's on a GPU) use one check, like test_gpt2.c.
package modeltest

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/fmtrain/fmtrain/internal/shareddata"
	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/kernels/kernelstest"
	"github.com/fmtrain/fmtrain/model"
	"github.com/fmtrain/fmtrain/safetensors"
)

// EnvVectors overrides the folder of reference vectors (more cases exist
// than are shipped).
const EnvVectors = "FMTRAIN_FMDIT_VECTORS"

// Tol is the README's tolerance: ‖got−want‖/‖want‖ ≤ 1e-4 per tensor.
const Tol = 1e-4

// VectorFiles lists the *.safetensors files of $FMTRAIN_FMDIT_VECTORS or
// shared/testdata/fm-dit, sorted; none is a test failure.
func VectorFiles(t testing.TB) []string {
	t.Helper()
	dir := os.Getenv(EnvVectors)
	if dir == "" {
		var err error
		if dir, err = shareddata.Path("testdata", "fm-dit"); err != nil {
			t.Fatal(err)
		}
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no *.safetensors reference vectors in %s", dir)
	}
	sort.Strings(files)
	return files
}

// Case is one reference file: its tensors, config and inputs.
type Case struct {
	Path   string
	File   *safetensors.File
	Config model.Config
	Input  model.Input
}

// LoadCase reads a reference file.
func LoadCase(t testing.TB, path string) Case {
	t.Helper()
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := model.ConfigFromMetadata(f.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	var sh struct{ B, F, H, W, S int }
	if err := json.Unmarshal([]byte(f.Metadata["shapes"]), &sh); err != nil {
		t.Fatalf("%s: shapes metadata: %v", path, err)
	}
	c := Case{Path: path, File: f, Config: cfg}
	c.Input = model.Input{X: c.Tensor(t, "x"), B: sh.B, F: sh.F, H: sh.H, W: sh.W,
		T: c.Tensor(t, "t"), Txt: c.Tensor(t, "txt"), S: sh.S, Mask: c.Tensor(t, "mask")}
	return c
}

// Tensor returns the float32 values of the tensor called name.
func (c Case) Tensor(t testing.TB, name string) []float32 {
	t.Helper()
	v, _, err := c.File.Float32s(name)
	if err != nil {
		t.Fatalf("%s: %v", c.Path, err)
	}
	return v
}

// Check builds the case's model on be, loads its weights, runs forward,
// the MSE loss and backward, and compares out, loss, every grad.<param>,
// grad.x and grad.txt with the file, failing t for each tensor past Tol and
// logging every tensor's error under -v. afterForward (may be nil) can
// compare more tensors (intermediates) through compare. It returns the
// model and the worst relative error.
func Check(t *testing.T, c Case, be kernels.Backend, afterForward func(m *model.Model, compare func(name string, got []float32))) (*model.Model, float64) {
	t.Helper()
	return CheckTol(t, c, be, Tol, Tol, afterForward)
}

// CheckTol is Check with other tolerances: outTol for out, loss and the
// intermediates, gradTol for the gradients (reduced-precision backends,
// e.g. bf16, are checked this way against looser bounds).
func CheckTol(t *testing.T, c Case, be kernels.Backend, outTol, gradTol float64, afterForward func(m *model.Model, compare func(name string, got []float32))) (*model.Model, float64) {
	t.Helper()
	m, err := model.New(c.Config, be)
	if err != nil {
		t.Fatal(err)
	}
	if err := model.ReadParams(c.File, c.Config, m.Params()); err != nil {
		t.Fatal(err)
	}
	var worst float64
	tol := outTol
	compare := func(name string, got []float32) {
		t.Helper()
		want := c.Tensor(t, name)
		if len(got) != len(want) {
			t.Errorf("%-45s length %d, want %d", name, len(got), len(want))
			return
		}
		e := kernelstest.RelErr(got, want)
		worst = math.Max(worst, e)
		status := "ok"
		if !(e <= tol) {
			status = "FAIL"
			t.Errorf("%-45s rel %.3g > %g", name, e, tol)
		}
		if testing.Verbose() {
			t.Logf("%-45s rel %.3g %s", name, e, status)
		}
	}
	ctx := context.Background()
	out, err := m.Forward(ctx, c.Input)
	if err != nil {
		t.Fatal(err)
	}
	if afterForward != nil {
		afterForward(m, compare)
	}
	compare("out", out)
	target := c.Tensor(t, "target")
	loss := be.MSEForward(out, target, len(out))
	compare("loss", []float32{float32(loss)})
	dOut := make([]float32, len(out))
	be.MSEBackward(dOut, out, target, len(out), 1)
	m.ZeroGrad()
	if err := m.Backward(ctx, dOut); err != nil {
		t.Fatal(err)
	}
	tol = gradTol
	for _, p := range model.ParamTable(c.Config) {
		compare("grad."+p.Name, m.Grads()[p.Offset:p.Offset+p.Size])
	}
	dx, dtxt := m.InputGrads()
	compare("grad.x", dx)
	compare("grad.txt", dtxt)
	t.Logf("%s on %s: worst relative error %.3g (tolerances %g, gradients %g)", filepath.Base(c.Path), be.Name(), worst, outTol, gradTol)
	return m, worst
}
