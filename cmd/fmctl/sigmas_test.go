package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func runSigmas(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newSigmasCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// TestSigmasJSONMatchesAnalytic runs the command for uniform u, shift 4.5,
// clamps [0.1, 0.95] (not a reference-vector setting): σ's CDF is
// F(x) = x/(s − (s−1)x), so the clamp masses are F(0.1) and 1 − F(0.95) and
// the median is s·0.5/(1 + (s−1)·0.5).
func TestSigmasJSONMatchesAnalytic(t *testing.T) {
	dir := t.TempDir()
	pngPath := filepath.Join(dir, "s.png")
	out, err := runSigmas(t, "--timestep_sampling", "uniform", "--flow-shift", "4.5", "--sigma-min", "0.1", "--sigma-max", "0.95",
		"-n", "200000", "--format", "json", "--png", pngPath)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"count", "mass_at_sigma_max", "mass_at_sigma_min", "max", "mean", "min", "quantiles", "std"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %v, want %v", keys, want)
	}
	F := func(x float64) float64 { return x / (4.5 - 3.5*x) }
	const n = 200000
	se := func(p float64) float64 { return 5 * math.Sqrt(p*(1-p)/n) }
	if got, want := m["mass_at_sigma_min"].(float64), F(0.1); math.Abs(got-want) > se(want) {
		t.Errorf("mass_at_sigma_min %v, want %v", got, want)
	}
	if got, want := m["mass_at_sigma_max"].(float64), 1-F(0.95); math.Abs(got-want) > se(want) {
		t.Errorf("mass_at_sigma_max %v, want %v", got, want)
	}
	q := m["quantiles"].(map[string]any)
	if got := F(q["p50"].(float64)); math.Abs(got-0.5) > 0.003 {
		t.Errorf("p50 = %v has F = %v, want 0.5 ± 0.003", q["p50"], got)
	}
	if m["count"].(float64) != n || m["min"].(float64) != float64(float32(0.1)) || m["max"].(float64) != float64(float32(0.95)) {
		t.Errorf("count/min/max %v %v %v", m["count"], m["min"], m["max"])
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("--png did not write a PNG: %v", err)
	}
}

func TestSigmasConfigFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	job := filepath.Join(dir, "job.yaml")
	// Wan2.2 high-noise stage: 70 % of σ on the 0.875 boundary.
	if err := os.WriteFile(job, []byte("name: wan22\nflow_matching:\n  timestep_sampling: uniform\n  flow_shift: 3\n  sigma_min: 0.875\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runSigmas(t, "--config", job, "-n", "100000")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"uniform, flow_shift 3, clamp [0.875, 1]", "draws      100000", "mass at sigma_min (0.875): 69.", "p50 0.8750", "[0.875, 0.878)", "◀ 69."} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// An explicit flag overrides the file.
	out, err = runSigmas(t, "--config", job, "-n", "1000", "--sigma-min", "0", "--format", "json")
	if err != nil || !strings.Contains(out, `"mass_at_sigma_min": 0`) {
		t.Errorf("override: %v\n%s", err, out)
	}
	if err := os.WriteFile(job, []byte("flow_matching:\n  flow_shift: -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runSigmas(t, "--config", job); err == nil || !strings.Contains(err.Error(), "flow_shift (-1)") || !strings.Contains(err.Error(), job) {
		t.Errorf("bad config: %v", err)
	}
	if _, err := runSigmas(t, "--format", "yaml"); err == nil {
		t.Error("--format yaml accepted")
	}
	if _, err := runSigmas(t, "--timestep-sampling", "logit-normal"); err == nil || !strings.Contains(err.Error(), "logit-normal") {
		t.Errorf("unknown sampler: %v", err)
	}
}
