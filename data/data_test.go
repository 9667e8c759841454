package data

import (
	"encoding/json"
	"github.com/fmtrain/fmtrain/safetensors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func synthSmall(t *testing.T) (string, *Manifest) {
	t.Helper()
	dir := t.TempDir()
	m, err := Synth(dir, SynthOptions{NumSamples: 60, NumShards: 3, Size: 8, TextLen: 4, TextDim: 8, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	return dir, m
}

func TestSynthRoundTrip(t *testing.T) {
	dir, m := synthSmall(t)
	if m.NumSamples() != 60 || len(m.Shards) != 3 {
		t.Fatalf("manifest: %+v", m)
	}
	ds, err := Open(filepath.Join(dir, SynthManifestName), OpenOptions{Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	if ds.Len() != 60 || ds.LatentSize() != 3*8*8 || ds.TextSize() != 32 {
		t.Fatalf("sizes: %d %d %d", ds.Len(), ds.LatentSize(), ds.TextSize())
	}
	lat, txt, mask := make([]float32, ds.LatentSize()), make([]float32, 32), make([]float32, 4)
	wantTxt, wantMask := make([]float32, 32), make([]float32, 4)
	seen := map[string]bool{}
	for i := 0; i < ds.Len(); i++ {
		caption, err := ds.Read(i, lat, txt, mask)
		if err != nil {
			t.Fatal(err)
		}
		seen[caption] = true
		EncodeCaption(caption, 4, 8, wantTxt, wantMask)
		if !slices.Equal(txt, wantTxt) || !slices.Equal(mask, wantMask) {
			t.Fatalf("sample %d (%q): text does not encode its caption", i, caption)
		}
		if !slices.Equal(mask, []float32{1, 1, 1, 0}) {
			t.Fatalf("sample %d: mask %v", i, mask)
		}
		// Black background plus at least a few pixels of the shape's colour.
		lit := 0
		for k, v := range lat {
			if v < -1 || v > 1 {
				t.Fatalf("sample %d: pixel %v outside [-1,1]", i, v)
			}
			if k < 64 && (v == 1 || lat[k+64] == 1 || lat[k+128] == 1) {
				lit++
			}
		}
		if lit < 5 {
			t.Fatalf("sample %d (%q): only %d lit pixels", i, caption, lit)
		}
	}
	if len(seen) < 10 {
		t.Errorf("only %d distinct captions in 60 samples", len(seen))
	}
	p, err := ReadPrompts(filepath.Join(dir, SynthPromptsName))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Captions, SynthPromptCaptions()) || p.S != 4 || p.Dt != 8 || len(p.Text) != len(p.Captions)*32 {
		t.Fatalf("prompts: %v S=%d Dt=%d", p.Captions, p.S, p.Dt)
	}
}

func TestDrawShapesDiffer(t *testing.T) {
	// Each shape covers a different set of pixels at the same centre and size.
	masks := map[string]string{}
	for _, sh := range Shapes {
		var b strings.Builder
		for y := -6; y <= 6; y++ {
			for x := -6; x <= 6; x++ {
				if inside(sh, float64(x), float64(y), 5) {
					b.WriteByte('#')
				} else {
					b.WriteByte('.')
				}
			}
		}
		for other, m := range masks {
			if m == b.String() {
				t.Errorf("%s and %s draw the same pixels", sh, other)
			}
		}
		masks[sh] = b.String()
	}
}

func TestPermutation(t *testing.T) {
	p0 := Permutation(100, 42, 0)
	if !slices.Equal(p0, Permutation(100, 42, 0)) {
		t.Fatal("not deterministic")
	}
	sorted := slices.Clone(p0)
	slices.Sort(sorted)
	for i, v := range sorted {
		if v != i {
			t.Fatalf("not a permutation: %v", p0)
		}
	}
	if slices.Equal(p0, Permutation(100, 42, 1)) || slices.Equal(p0, Permutation(100, 43, 0)) {
		t.Error("epoch or seed does not change the order")
	}
	o := NewOrder(100, 42, true)
	e, i := o.Index(250)
	if e != 2 || i != Permutation(100, 42, 2)[50] {
		t.Errorf("Index(250) = %d, %d", e, i)
	}
	if e, i := NewOrder(10, 1, false).Index(23); e != 2 || i != 3 {
		t.Errorf("unshuffled Index(23) = %d, %d", e, i)
	}
}

// A run that changes world size between generations reads every position
// exactly once, in step order.
func TestPlanElasticCoverage(t *testing.T) {
	const G, L = 12, 2
	seen := map[int64]int{}
	step := int64(0)
	for _, world := range []int{3, 2, 6, 1} {
		for k := 0; k < 4; k++ { // four steps per generation
			var stepPos []int64
			for r := 0; r < world; r++ {
				p := Plan{GlobalBatch: G, LocalBatch: L, World: world, Rank: r}
				if err := p.Validate(); err != nil {
					t.Fatal(err)
				}
				for a := 0; a < p.Accumulation(); a++ {
					stepPos = append(stepPos, p.Positions(step*G, a)...)
				}
			}
			slices.Sort(stepPos)
			for j, pos := range stepPos {
				if pos != step*G+int64(j) {
					t.Fatalf("world %d step %d: positions %v", world, step, stepPos)
				}
				seen[pos]++
			}
			step++
		}
	}
	if len(seen) != int(step)*G {
		t.Fatalf("%d positions seen, want %d", len(seen), step*G)
	}
	if err := (Plan{GlobalBatch: 12, LocalBatch: 5, World: 1}).Validate(); err == nil {
		t.Error("a plan that does not cover the batch was accepted")
	}
	if StepsForEpochs(3, 100, 32) != 9 {
		t.Error("StepsForEpochs(3, 100, 32) != 9")
	}
}

func TestLoaderBatch(t *testing.T) {
	dir, _ := synthSmall(t)
	ds, err := Open(filepath.Join(dir, SynthManifestName), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	l := NewLoader(ds, 3, true)
	b, idx, epoch, err := l.Batch([]int64{58, 59, 60})
	if err != nil {
		t.Fatal(err)
	}
	if epoch != 0 || len(idx) != 3 || idx[0] != Permutation(60, 3, 0)[58] || idx[2] != Permutation(60, 3, 1)[0] {
		t.Errorf("indices %v epoch %d", idx, epoch)
	}
	lt := b.Tensor("image_latents")
	if lt == nil || !slices.Equal(lt.Shape, []int{3, 3, 8, 8}) {
		t.Fatalf("image_latents %v", lt)
	}
	if te := b.Tensor("text_embeddings"); te == nil || !slices.Equal(te.Shape, []int{3, 4, 8}) {
		t.Fatalf("text_embeddings %v", te)
	}
	if b["data_type"] != "image" {
		t.Errorf("data_type %v", b["data_type"])
	}
	// The batch holds exactly the samples the order names.
	want := make([]float32, ds.LatentSize())
	if _, err := ds.Read(idx[1], want, make([]float32, 32), make([]float32, 4)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lt.Data[192:384], want) {
		t.Error("batch row 1 is not the sample the order names")
	}
}

func TestCorruptDatasets(t *testing.T) {
	cases := []struct {
		name string
		harm func(t *testing.T, dir string, m *Manifest)
		opts OpenOptions
		want string
	}{
		{"missing shard", func(t *testing.T, dir string, m *Manifest) {
			os.Remove(filepath.Join(dir, m.Shards[1].Path))
		}, OpenOptions{}, "shard-00001.safetensors"},
		{"truncated shard", func(t *testing.T, dir string, m *Manifest) {
			p := filepath.Join(dir, m.Shards[2].Path)
			os.Truncate(p, m.Shards[2].Bytes-100)
		}, OpenOptions{}, "shard-00002.safetensors is"},
		{"flipped byte", func(t *testing.T, dir string, m *Manifest) {
			p := filepath.Join(dir, m.Shards[0].Path)
			raw, _ := os.ReadFile(p)
			raw[len(raw)-7] ^= 0x40
			os.WriteFile(p, raw, 0o644)
		}, OpenOptions{Verify: true}, "shard-00000.safetensors is corrupt"},
		{"garbage header", func(t *testing.T, dir string, m *Manifest) {
			p := filepath.Join(dir, m.Shards[0].Path)
			raw, _ := os.ReadFile(p)
			copy(raw[8:], "{{{{")
			os.WriteFile(p, raw, 0o644)
		}, OpenOptions{}, "shard-00000.safetensors: corrupt safetensors header"},
		{"wrong shape in manifest", func(t *testing.T, dir string, m *Manifest) {
			m.TextDim = 9
			WriteManifest(filepath.Join(dir, SynthManifestName), m)
		}, OpenOptions{}, `tensor "text_embeddings" has shape [20 4 8], the manifest implies [20 4 9]`},
		{"bad manifest", func(t *testing.T, dir string, m *Manifest) {
			raw, _ := json.Marshal(map[string]any{"format": "other"})
			os.WriteFile(filepath.Join(dir, SynthManifestName), raw, 0o644)
		}, OpenOptions{}, `format ("other") must be "fmtrain-dataset"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, m := synthSmall(t)
			c.harm(t, dir, m)
			_, err := Open(filepath.Join(dir, SynthManifestName), c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestEnsureSynth(t *testing.T) {
	dir := t.TempDir()
	manifest := filepath.Join(dir, "demo", SynthManifestName)
	if wrote, err := EnsureSynth(manifest, 1, 16); err != nil || !wrote {
		t.Fatalf("first call: %v, %v", wrote, err)
	}
	if m, err := ReadManifest(manifest); err != nil || m.TextDim != 16 {
		t.Fatalf("written manifest: %v", err)
	}
	if wrote, err := EnsureSynth(manifest, 1, 16); err != nil || wrote {
		t.Fatalf("second call: %v, %v", wrote, err)
	}
	if _, err := EnsureSynth(filepath.Join(dir, "demo", "other.json"), 1, 0); err == nil {
		t.Error("a missing manifest of another name was accepted")
	}
	os.WriteFile(filepath.Join(dir, "x"), nil, 0o644)
	if _, err := EnsureSynth(filepath.Join(dir, SynthManifestName), 1, 0); err == nil {
		t.Error("wrote demo data into a non-empty directory")
	}
}

// A shard without text_mask keeps every token.
func TestShardWithoutMask(t *testing.T) {
	dir := t.TempDir()
	n, S, Dt := 2, 3, 2
	lat := make([]float32, n*3*2*2)
	txt := make([]float32, n*S*Dt)
	lt, _ := safetensors.FromFloat32(KeyLatents, safetensors.F32, []int{n, 3, 2, 2}, lat)
	tt, _ := safetensors.FromFloat32(KeyTextEmbeddings, safetensors.BF16, []int{n, S, Dt}, txt)
	path := filepath.Join(dir, "s.safetensors")
	if err := safetensors.WriteFile(path, []safetensors.Tensor{lt, tt}, nil); err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Format: ManifestFormat, Version: ManifestVersion, DataType: "image", LatentShape: []int{3, 2, 2},
		TextLen: S, TextDim: Dt, Shards: []Shard{{Path: "s.safetensors", NumSamples: n}}}
	if err := WriteManifest(filepath.Join(dir, "manifest.json"), m); err != nil {
		t.Fatal(err)
	}
	ds, err := Open(filepath.Join(dir, "manifest.json"), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	mask := make([]float32, S)
	if _, err := ds.Read(1, make([]float32, 12), make([]float32, S*Dt), mask); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(mask, []float32{1, 1, 1}) {
		t.Errorf("mask %v", mask)
	}
}

func TestDrawShapeJitterBounds(t *testing.T) {
	// The demo relies on small jitter (centre ±size/32, radius 0.30–0.36·size):
	// measure both from the pixels of drawn circles, and check every shape
	// stays inside the frame.
	const size = 32
	r := rand.New(rand.NewPCG(7, 7))
	img := make([]float32, 3*size*size)
	for i := 0; i < 200; i++ {
		sh := Shapes[i%len(Shapes)]
		DrawShape(img, size, sh, [3]float32{1, 1, 1}, r)
		x0, y0, x1, y1 := size, size, -1, -1
		for y := 0; y < size; y++ {
			for x := 0; x < size; x++ {
				if img[y*size+x] > 0 {
					x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
				}
			}
		}
		if x0 == 0 || y0 == 0 || x1 == size-1 || y1 == size-1 {
			t.Fatalf("draw %d (%s) touches the border: x %d..%d y %d..%d", i, sh, x0, x1, y0, y1)
		}
		if sh != "circle" {
			continue
		}
		cx, cy := float64(x0+x1+1)/2, float64(y0+y1+1)/2
		rad := float64(x1-x0+1) / 2
		if math.Abs(cx-size/2) > size/32.0+1 || math.Abs(cy-size/2) > size/32.0+1 {
			t.Errorf("draw %d: circle centre (%.1f, %.1f), want within %g+1 of %d", i, cx, cy, size/32.0, size/2)
		}
		if rad < 0.30*size-1 || rad > 0.36*size+1 {
			t.Errorf("draw %d: circle radius %.1f, want %.1f…%.1f (±1)", i, rad, 0.30*size, 0.36*size)
		}
	}
}
