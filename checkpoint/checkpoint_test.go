package checkpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

var layout = []Param{
	{Name: "a.weight", Shape: []int{3, 4}, Offset: 0},
	{Name: "a.bias", Shape: []int{3}, Offset: 12},
	{Name: "b.weight", Shape: []int{2, 3}, Offset: 15},
}

func state(step int64) *State {
	n := 21
	st := &State{Step: step, DataPosition: step * 32, Epoch: 1, Seed: 9, Spec: []byte("name: x\n"),
		ModelConfig: []byte(`{"hidden_size":64}`), Layout: layout, AdamStep: step,
		Params: make([]float32, n), AdamM: make([]float32, n), AdamV: make([]float32, n), EMA: make([]float32, n)}
	for i := 0; i < n; i++ {
		st.Params[i] = float32(i) + float32(step)/7
		st.AdamM[i] = -float32(i) / 3
		st.AdamV[i] = float32(i*i) / 11
		st.EMA[i] = float32(i) / 5
	}
	return st
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := state(100)
	path, err := Save(context.Background(), dir, want, 0)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "step_00000100" {
		t.Errorf("path %s", path)
	}
	got, err := Load(path, layout)
	if err != nil {
		t.Fatal(err)
	}
	if got.Step != 100 || got.DataPosition != 3200 || got.Epoch != 1 || got.Seed != 9 || got.AdamStep != 100 ||
		string(got.Spec) != "name: x\n" || string(got.ModelConfig) != `{"hidden_size":64}` {
		t.Errorf("scalars: %+v", got)
	}
	for name, pair := range map[string][2][]float32{
		"params": {got.Params, want.Params}, "m": {got.AdamM, want.AdamM},
		"v": {got.AdamV, want.AdamV}, "ema": {got.EMA, want.EMA},
	} {
		if !slices.Equal(pair[0], pair[1]) {
			t.Errorf("%s differ", name)
		}
	}
	// The weights file alone is a plain safetensors file with the names.
	w, err := ReadWeights(filepath.Join(path, WeightsFile), layout)
	if err != nil || !slices.Equal(w, want.Params) {
		t.Errorf("ReadWeights: %v", err)
	}
}

func TestLoadRejectsDamage(t *testing.T) {
	cases := []struct {
		name string
		harm func(path string)
		want string
	}{
		{"flipped weight byte", func(p string) { flip(p, WeightsFile, -3) }, "model.safetensors is corrupt: sha256"},
		{"flipped moment byte", func(p string) { flip(p, OptimizerFile, -10) }, "optimizer.safetensors is corrupt"},
		{"truncated ema", func(p string) {
			fp := filepath.Join(p, EMAFile)
			st, _ := os.Stat(fp)
			os.Truncate(fp, st.Size()-4)
		}, "ema.safetensors is truncated or replaced"},
		{"edited header", func(p string) {
			fp := filepath.Join(p, HeaderFile)
			raw, _ := os.ReadFile(fp)
			os.WriteFile(fp, []byte(strings.Replace(string(raw), `"step": 100`, `"step": 900`, 1)), 0o644)
		}, "header.json is corrupt: checksum"},
		{"garbage header", func(p string) { os.WriteFile(filepath.Join(p, HeaderFile), []byte("{nope"), 0o644) }, "header.json is corrupt"},
		{"missing weights", func(p string) { os.Remove(filepath.Join(p, WeightsFile)) }, "model.safetensors: no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, err := Save(context.Background(), t.TempDir(), state(100), 0)
			if err != nil {
				t.Fatal(err)
			}
			c.harm(path)
			if _, err := Load(path, layout); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load: got %v, want an error containing %q", err, c.want)
			}
			if _, err := Verify(path); err == nil {
				t.Fatal("Verify accepted a damaged checkpoint")
			}
		})
	}
}

func flip(path, name string, at int) {
	fp := filepath.Join(path, name)
	raw, _ := os.ReadFile(fp)
	raw[len(raw)+at] ^= 0x10
	os.WriteFile(fp, raw, 0o644)
}

func TestLayoutMismatch(t *testing.T) {
	path, err := Save(context.Background(), t.TempDir(), state(1), 0)
	if err != nil {
		t.Fatal(err)
	}
	other := slices.Clone(layout)
	other[1] = Param{Name: "a.bias", Shape: []int{4}, Offset: 12}
	if _, err := Load(path, other); err == nil || !strings.Contains(err.Error(), `tensor "a.bias" has shape [3], the model needs [4]`) {
		t.Fatalf("got %v", err)
	}
	renamed := slices.Clone(layout)
	renamed[2].Name = "c.weight"
	if _, err := Load(path, renamed); err == nil || !strings.Contains(err.Error(), "c.weight") {
		t.Fatalf("got %v", err)
	}
}

func TestKeepLastAndLatest(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []int64{10, 20, 30, 40} {
		if _, err := Save(context.Background(), dir, state(s), 2); err != nil {
			t.Fatal(err)
		}
	}
	all, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || filepath.Base(all[0]) != "step_00000030" || filepath.Base(all[1]) != "step_00000040" {
		t.Fatalf("kept %v", all)
	}
	latest, skipped, err := Latest(dir)
	if err != nil || filepath.Base(latest) != "step_00000040" || len(skipped) != 0 {
		t.Fatalf("Latest = %s, %v, %v", latest, skipped, err)
	}
	// A damaged newest checkpoint is skipped, with the reason reported.
	flip(all[1], WeightsFile, -1)
	latest, skipped, err = Latest(dir)
	if err != nil || filepath.Base(latest) != "step_00000030" || len(skipped) != 1 || !strings.Contains(skipped[0].Error(), "step_00000040") {
		t.Fatalf("Latest after damage = %s, %v, %v", latest, skipped, err)
	}
	// Re-saving an existing step replaces it.
	if _, err := Save(context.Background(), dir, state(30), 0); err != nil {
		t.Fatal(err)
	}
	if latest, _, _ := Latest(dir); filepath.Base(latest) != "step_00000030" {
		t.Fatalf("after re-save Latest = %s", latest)
	}
	if p, _, err := Latest(filepath.Join(dir, "none")); p != "" || err != nil {
		t.Errorf("Latest of a missing dir = %q, %v", p, err)
	}
}

// fullDisk fails writes with ENOSPC once budget bytes have been written.
type fullDisk struct {
	f      *os.File
	budget *int
}

func (d fullDisk) Write(p []byte) (int, error) {
	if len(p) > *d.budget {
		n, _ := d.f.Write(p[:*d.budget])
		*d.budget = 0
		return n, &os.PathError{Op: "write", Path: d.f.Name(), Err: syscall.ENOSPC}
	}
	*d.budget -= len(p)
	return d.f.Write(p)
}
func (d fullDisk) Sync() error  { return d.f.Sync() }
func (d fullDisk) Close() error { return d.f.Close() }

func TestFullDiskKeepsPreviousCheckpoint(t *testing.T) {
	dir := t.TempDir()
	prev, err := Save(context.Background(), dir, state(10), 0)
	if err != nil {
		t.Fatal(err)
	}
	budget := 150
	createFile = func(name string) (file, error) {
		f, err := os.Create(name)
		return fullDisk{f, &budget}, err
	}
	defer func() { createFile = func(name string) (file, error) { return os.Create(name) } }()
	_, err = Save(context.Background(), dir, state(20), 0)
	if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "step_00000020") {
		t.Fatalf("got %v, want ENOSPC naming the checkpoint", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "step_00000010" {
		t.Fatalf("directory holds %v after the failed save", entries)
	}
	if _, err := Load(prev, layout); err != nil {
		t.Fatalf("previous checkpoint damaged: %v", err)
	}
}

func TestSaveRejectsBadState(t *testing.T) {
	st := state(1)
	st.AdamV = st.AdamV[:5]
	if _, err := Save(context.Background(), t.TempDir(), st, 0); err == nil {
		t.Error("accepted moments of the wrong length")
	}
	st = state(1)
	st.Layout = layout[:2]
	if _, err := Save(context.Background(), t.TempDir(), st, 0); err == nil {
		t.Error("accepted a layout that does not cover the params")
	}
}
