package model_test

import (
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/kernels"
	"github.com/fmtrain/fmtrain/model"
	"github.com/fmtrain/fmtrain/model/modeltest"
)

// TestReferenceVectors runs every reference file through forward, MSE loss
// and backward on the cpu and reference backends, comparing the output,
// the loss, the intermediates, every parameter gradient, grad.x and
// grad.txt (each tensor's relative error is logged under -v).
func TestReferenceVectors(t *testing.T) {
	for _, path := range modeltest.VectorFiles(t) {
		for _, backend := range []string{"cpu", "reference"} {
			t.Run(strings.TrimSuffix(filepath.Base(path), ".safetensors")+"/"+backend, func(t *testing.T) {
				c := modeltest.LoadCase(t, path)
				be, err := kernels.Open(backend)
				if err != nil {
					t.Fatal(err)
				}
				if cl, ok := be.(kernels.Closer); ok {
					defer cl.Close()
				}
				modeltest.Check(t, c, be, func(m *model.Model, compare func(string, []float32)) {
					inter := model.Intermediates(m)
					names := make([]string, 0, len(inter))
					for n := range inter {
						names = append(names, n)
					}
					sort.Strings(names)
					for _, n := range names {
						compare(n, inter[n])
					}
				})
			})
		}
	}
}

// TestAllMaskedSampleGetsNoTextGradient checks the README's by-construction
// zeros in c_allmasked: sample 1's text gets exactly zero gradient, and so
// do sample 2's padded tokens.
func TestAllMaskedSampleGetsNoTextGradient(t *testing.T) {
	var path string
	for _, p := range modeltest.VectorFiles(t) {
		if filepath.Base(p) == "c_allmasked.safetensors" {
			path = p
		}
	}
	if path == "" {
		t.Fatal("c_allmasked.safetensors not among the reference vectors")
	}
	c := modeltest.LoadCase(t, path)
	be := kernels.NewCPU(kernels.CPUOptions{})
	defer be.Close()
	m, _ := modeltest.Check(t, c, be, nil)
	_, dtxt := m.InputGrads()
	S, Dt := c.Input.S, c.Config.TextDim
	for i, v := range dtxt[S*Dt : 2*S*Dt] {
		if v != 0 {
			t.Fatalf("all-masked sample 1: text gradient element %d = %v, want exactly 0", i, v)
		}
	}
	for i, v := range dtxt[2*S*Dt+2*Dt : 3*S*Dt] {
		if v != 0 {
			t.Fatalf("sample 2 padded token gradient element %d = %v, want 0", i, v)
		}
	}
	var kept float64
	for _, v := range dtxt[2*S*Dt : 2*S*Dt+2*Dt] {
		kept += float64(v) * float64(v)
	}
	if kept == 0 {
		t.Fatal("sample 2's kept tokens got no gradient")
	}
}
