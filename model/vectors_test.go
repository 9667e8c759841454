package model

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/internal/shareddata"
	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/kernels/kernelstest"
	"github.com/fmtrain/fmtrain/safetensors"
)

// EnvVectors overrides the folder of FM-DiT reference vectors.
const EnvVectors = "FMTRAIN_FMDIT_VECTORS"

// vectorTol is the README's tolerance: ‖got−want‖/‖want‖ ≤ 1e-4 per tensor.
const vectorTol = 1e-4

func vectorFiles(t *testing.T) []string {
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

// vectorCase is one reference file's inputs and expected values.
type vectorCase struct {
	f   *safetensors.File
	cfg Config
	in  Input
}

func loadCase(t *testing.T, path string) vectorCase {
	t.Helper()
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigFromMetadata(f.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	var sh struct{ B, F, H, W, S int }
	if err := json.Unmarshal([]byte(f.Metadata["shapes"]), &sh); err != nil {
		t.Fatalf("shapes metadata: %v", err)
	}
	get := func(name string) []float32 {
		v, _, err := f.Float32s(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	in := Input{X: get("x"), B: sh.B, F: sh.F, H: sh.H, W: sh.W, T: get("t"), Txt: get("txt"), S: sh.S, Mask: get("mask")}
	return vectorCase{f: f, cfg: cfg, in: in}
}

// TestReferenceVectors runs every reference file through forward, MSE loss
// and backward on the CPU and reference backends and compares the output,
// the loss, the intermediates, every parameter gradient, grad.x and
// grad.txt, reporting each tensor's relative error.
func TestReferenceVectors(t *testing.T) {
	for _, path := range vectorFiles(t) {
		for _, backend := range []string{"cpu", "reference"} {
			t.Run(strings.TrimSuffix(filepath.Base(path), ".safetensors")+"/"+backend, func(t *testing.T) {
				vc := loadCase(t, path)
				be, err := kernels.Open(backend)
				if err != nil {
					t.Fatal(err)
				}
				if c, ok := be.(kernels.Closer); ok {
					defer c.Close()
				}
				m, err := New(vc.cfg, be)
				if err != nil {
					t.Fatal(err)
				}
				if err := ReadParams(vc.f, vc.cfg, m.Params()); err != nil {
					t.Fatal(err)
				}
				want := func(name string) []float32 {
					v, _, err := vc.f.Float32s(name)
					if err != nil {
						t.Fatal(err)
					}
					return v
				}
				var worst float64
				compare := func(name string, got []float32) {
					t.Helper()
					w := want(name)
					if len(got) != len(w) {
						t.Errorf("%-45s length %d, want %d", name, len(got), len(w))
						return
					}
					e := kernelstest.RelErr(got, w)
					worst = math.Max(worst, e)
					status := "ok"
					if !(e <= vectorTol) {
						status = "FAIL"
						t.Errorf("%-45s rel %.3g > %g", name, e, vectorTol)
					}
					if testing.Verbose() {
						t.Logf("%-45s rel %.3g %s", name, e, status)
					}
				}

				out, err := m.Forward(context.Background(), vc.in)
				if err != nil {
					t.Fatal(err)
				}
				a := &m.act
				compare("inter.patches", a.patches)
				compare("inter.pos", a.pos)
				compare("inter.temb", a.temb)
				compare("inter.c", a.c)
				compare("inter.y", a.y)
				compare("inter.o", a.o)
				compare("out", out)

				target := want("target")
				loss := be.MSEForward(out, target, len(out))
				compare("loss", []float32{float32(loss)})
				dOut := make([]float32, len(out))
				be.MSEBackward(dOut, out, target, len(out), 1)
				m.ZeroGrad()
				if err := m.Backward(context.Background(), dOut); err != nil {
					t.Fatal(err)
				}
				for _, p := range ParamTable(vc.cfg) {
					compare("grad."+p.Name, m.Grads()[p.Offset:p.Offset+p.Size])
				}
				dx, dtxt := m.InputGrads()
				compare("grad.x", dx)
				compare("grad.txt", dtxt)
				t.Logf("%s on %s: worst relative error %.3g (tolerance %g)", filepath.Base(path), backend, worst, vectorTol)
			})
		}
	}
}

// TestAllMaskedSampleGetsNoTextGradient checks the README's by-construction
// zeros in c_allmasked: sample 1's text gets exactly zero gradient.
func TestAllMaskedSampleGetsNoTextGradient(t *testing.T) {
	path, err := shareddata.Path("testdata", "fm-dit", "c_allmasked.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	vc := loadCase(t, path)
	be := kernels.NewCPU(kernels.CPUOptions{})
	defer be.Close()
	m, err := New(vc.cfg, be)
	if err != nil {
		t.Fatal(err)
	}
	if err := ReadParams(vc.f, vc.cfg, m.Params()); err != nil {
		t.Fatal(err)
	}
	out, err := m.Forward(context.Background(), vc.in)
	if err != nil {
		t.Fatal(err)
	}
	dOut := make([]float32, len(out))
	for i := range dOut {
		dOut[i] = 1
	}
	if err := m.Backward(context.Background(), dOut); err != nil {
		t.Fatal(err)
	}
	_, dtxt := m.InputGrads()
	S, Dt := vc.in.S, vc.cfg.TextDim
	for i, v := range dtxt[S*Dt : 2*S*Dt] {
		if v != 0 {
			t.Fatalf("all-masked sample 1: text gradient element %d = %v, want exactly 0", i, v)
		}
	}
	// Sample 2 keeps only its first 2 tokens: the padded ones get none either.
	for i, v := range dtxt[2*S*Dt+2*Dt : 3*S*Dt] {
		if v != 0 {
			t.Fatalf("sample 2 padded token gradient element %d = %v, want 0", i, v)
		}
	}
	if fmt.Sprint(dtxt[2*S*Dt]) == "0" {
		t.Fatal("sample 2's kept token got no gradient")
	}
}
