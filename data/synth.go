package data

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// Shapes and Colours of the synthetic demo data; a caption is
// "a <colour> <shape>".
var (
	Shapes  = []string{"circle", "square", "triangle", "cross"}
	Colours = []struct {
		Name string
		RGB  [3]float32 // in [-1, 1]
	}{
		{"red", [3]float32{1, -1, -1}},
		{"green", [3]float32{-1, 1, -1}},
		{"blue", [3]float32{-1, -1, 1}},
		{"yellow", [3]float32{1, 1, -1}},
		{"magenta", [3]float32{1, -1, 1}},
		{"cyan", [3]float32{-1, 1, 1}},
	}
)

// SynthOptions size the synthetic dataset.
type SynthOptions struct {
	NumSamples int    // images (default 4096)
	NumShards  int    // shards (default 4)
	Size       int    // image edge in pixels (default 16)
	TextLen    int    // S, tokens per caption (default 4; captions have 3 words)
	TextDim    int    // Dt (default 32)
	Seed       uint64 // jitter of position and size
}

func (o *SynthOptions) fill() {
	if o.NumSamples == 0 {
		o.NumSamples = 4096
	}
	if o.NumShards == 0 {
		o.NumShards = 4
	}
	if o.Size == 0 {
		o.Size = 16
	}
	if o.TextLen == 0 {
		o.TextLen = 4
	}
	if o.TextDim == 0 {
		o.TextDim = 32
	}
}

// SynthManifestName and SynthPromptsName are the files Synth writes beside
// its shards.
const (
	SynthManifestName = "manifest.json"
	SynthPromptsName  = "prompts.safetensors"
)

// Synth writes the demo dataset into dir: pixel-space RGB images
// [3,Size,Size] in [-1,1] of a coloured shape on black, captioned
// "a <colour> <shape>", with text embeddings from EncodeCaption; plus
// prompts.safetensors with one entry per shape in two colours for sample
// grids. It returns the manifest (written to dir/manifest.json).
func Synth(dir string, o SynthOptions) (*Manifest, error) {
	o.fill()
	if o.NumShards > o.NumSamples || o.Size < 8 || o.TextLen < 3 {
		return nil, fmt.Errorf("data: synth needs shards <= samples (%d, %d), size >= 8 (%d), text_len >= 3 (%d)",
			o.NumShards, o.NumSamples, o.Size, o.TextLen)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data: synth: %w", err)
	}
	r := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	m := &Manifest{Format: ManifestFormat, Version: ManifestVersion, DataType: "image",
		LatentShape: []int{3, o.Size, o.Size}, TextLen: o.TextLen, TextDim: o.TextDim,
		PixelSpace: true, Prompts: SynthPromptsName}
	S, Dt, npix := o.TextLen, o.TextDim, 3*o.Size*o.Size
	for s := 0; s < o.NumShards; s++ {
		lo, hi := s*o.NumSamples/o.NumShards, (s+1)*o.NumSamples/o.NumShards
		n := hi - lo
		lat := make([]float32, n*npix)
		txt := make([]float32, n*S*Dt)
		mask := make([]float32, n*S)
		caps := make([]string, n)
		for j := 0; j < n; j++ {
			shape := Shapes[r.IntN(len(Shapes))]
			col := Colours[r.IntN(len(Colours))]
			caps[j] = "a " + col.Name + " " + shape
			DrawShape(lat[j*npix:(j+1)*npix], o.Size, shape, col.RGB, r)
			EncodeCaption(caps[j], S, Dt, txt[j*S*Dt:(j+1)*S*Dt], mask[j*S:(j+1)*S])
		}
		name := fmt.Sprintf("shard-%05d.safetensors", s)
		sh, err := WriteShard(filepath.Join(dir, name), n, m.LatentShape, lat, S, Dt, txt, mask, caps)
		if err != nil {
			return nil, err
		}
		sh.Path = name
		m.Shards = append(m.Shards, sh)
	}
	if err := writeSynthPrompts(filepath.Join(dir, SynthPromptsName), S, Dt); err != nil {
		return nil, err
	}
	if err := WriteManifest(filepath.Join(dir, SynthManifestName), m); err != nil {
		return nil, err
	}
	return m, nil
}

// SynthPromptCaptions are the captions of the prompts file Synth writes:
// every shape, each in two colours.
func SynthPromptCaptions() []string {
	var caps []string
	for i, sh := range Shapes {
		for _, c := range []int{i % len(Colours), (i + 3) % len(Colours)} {
			caps = append(caps, "a "+Colours[c].Name+" "+sh)
		}
	}
	return caps
}

func writeSynthPrompts(path string, S, Dt int) error {
	caps := SynthPromptCaptions()
	txt := make([]float32, len(caps)*S*Dt)
	mask := make([]float32, len(caps)*S)
	for i, c := range caps {
		EncodeCaption(c, S, Dt, txt[i*S*Dt:(i+1)*S*Dt], mask[i*S:(i+1)*S])
	}
	return WritePrompts(path, caps, S, Dt, txt, mask)
}

// EncodeCaption is the synthetic "text encoder": token k of the caption's
// words gets a fixed pseudo-random unit-variance vector per word (seeded by
// the word's FNV hash) plus a small position code; tokens past the caption
// are zero with mask 0. The same caption always gives the same embedding.
func EncodeCaption(caption string, S, Dt int, emb, mask []float32) {
	clear(emb)
	clear(mask)
	words := strings.Fields(caption)
	for k := 0; k < S && k < len(words); k++ {
		h := fnv.New64a()
		h.Write([]byte(words[k]))
		r := rand.New(rand.NewPCG(h.Sum64(), 0xcafe))
		row := emb[k*Dt : (k+1)*Dt]
		for d := range row {
			row[d] = float32(r.NormFloat64()) + 0.1*float32(math.Sin(float64(k+1)*float64(d+1)))
		}
		mask[k] = 1
	}
}

// DrawShape paints shape in colour rgb on black into img [3,size,size],
// with the centre jittered by up to size/32 and the radius between
// 0.30·size and 0.36·size. The jitter is kept this small on purpose: with
// ±size/8 and radii size/4…size/3 the demo's tiny model, in the few
// thousand steps a 2-core CPU gives it, learnt colours but drew every shape
// as a blob (its prediction at high σ was a circle for squares and crosses);
// with this jitter the shapes come out recognisable in 1000 steps.
func DrawShape(img []float32, size int, shape string, rgb [3]float32, r *rand.Rand) {
	for i := range img {
		img[i] = -1
	}
	s := float64(size)
	cx := s/2 + (r.Float64()*2-1)*s/32
	cy := s/2 + (r.Float64()*2-1)*s/32
	rad := s*0.30 + r.Float64()*s*0.06
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			dx, dy := float64(x)+0.5-cx, float64(y)+0.5-cy
			if !inside(shape, dx, dy, rad) {
				continue
			}
			for c := 0; c < 3; c++ {
				img[(c*size+y)*size+x] = rgb[c]
			}
		}
	}
}

func inside(shape string, dx, dy, rad float64) bool {
	switch shape {
	case "circle":
		return dx*dx+dy*dy <= rad*rad
	case "square":
		return math.Abs(dx) <= rad*0.8 && math.Abs(dy) <= rad*0.8
	case "triangle": // apex up
		if dy < -rad || dy > rad*0.7 {
			return false
		}
		half := (dy + rad) / (1.7 * rad) * rad
		return math.Abs(dx) <= half
	case "cross":
		w := rad * 0.35
		return (math.Abs(dx) <= w && math.Abs(dy) <= rad) || (math.Abs(dy) <= w && math.Abs(dx) <= rad)
	}
	return false
}

// EnsureSynth makes sure the dataset at manifest exists, writing the demo
// dataset there (with textDim, 0 for the default) when the manifest is
// missing and its directory is absent or empty. It reports whether it wrote
// one. A missing manifest beside other files, or under another name than
// manifest.json, is an error: a mistyped path to real data must not turn
// into training on shapes.
func EnsureSynth(manifest string, seed uint64, textDim int) (bool, error) {
	if _, err := os.Stat(manifest); err == nil {
		return false, nil
	} else if !os.IsNotExist(err) {
		return false, fmt.Errorf("data: %w", err)
	}
	dir := filepath.Dir(manifest)
	if filepath.Base(manifest) != SynthManifestName {
		return false, fmt.Errorf("data: manifest %s does not exist (a demo dataset would be %s)", manifest, filepath.Join(dir, SynthManifestName))
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return false, fmt.Errorf("data: manifest %s does not exist and %s is not empty: not writing demo data over it", manifest, dir)
	}
	if _, err := Synth(dir, SynthOptions{Seed: seed, TextDim: textDim}); err != nil {
		return false, err
	}
	return true, nil
}
