package data

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/fmtrain/fmtrain/safetensors"
)

// WriteShard writes n samples as one shard at path: latents [n, latentShape…],
// text_embeddings [n,S,Dt], text_mask [n,S] (U8) and captions (may be nil)
// in the metadata. It returns the manifest entry (with size and sha256) for
// a shard whose manifest lives in the same directory.
func WriteShard(path string, n int, latentShape []int, lat []float32, S, Dt int, txt, mask []float32, captions []string) (Shard, error) {
	lt, err := safetensors.FromFloat32(KeyLatents, safetensors.F32, append([]int{n}, latentShape...), lat)
	if err != nil {
		return Shard{}, fmt.Errorf("data: %s: %w", path, err)
	}
	tt, err := safetensors.FromFloat32(KeyTextEmbeddings, safetensors.F32, []int{n, S, Dt}, txt)
	if err != nil {
		return Shard{}, fmt.Errorf("data: %s: %w", path, err)
	}
	mt, err := maskTensor(n, S, mask)
	if err != nil {
		return Shard{}, fmt.Errorf("data: %s: %w", path, err)
	}
	var meta map[string]string
	if captions != nil {
		meta = map[string]string{MetaCaptions: jsonStrings(captions)}
	}
	if err := safetensors.WriteFile(path, []safetensors.Tensor{lt, tt, mt}, meta); err != nil {
		return Shard{}, err
	}
	size, sum, err := hashFile(path)
	if err != nil {
		return Shard{}, err
	}
	return Shard{NumSamples: n, Bytes: size, SHA256: sum}, nil
}

func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("data: hashing %s: %w", path, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func jsonStrings(s []string) string {
	b, _ := json.Marshal(s) // []string always encodes
	return string(b)
}

func maskTensor(n, S int, mask []float32) (safetensors.Tensor, error) {
	mb := make([]byte, len(mask))
	for i, v := range mask {
		if v != 0 {
			mb[i] = 1
		}
	}
	return safetensors.FromBytes(KeyTextMask, safetensors.U8, []int{n, S}, mb)
}

// WritePrompts writes a prompts file: text_embeddings [n,S,Dt], text_mask
// [n,S] and the captions in the metadata — what fmctl sample reads.
func WritePrompts(path string, captions []string, S, Dt int, txt, mask []float32) error {
	n := len(captions)
	tt, err := safetensors.FromFloat32(KeyTextEmbeddings, safetensors.F32, []int{n, S, Dt}, txt)
	if err != nil {
		return fmt.Errorf("data: %s: %w", path, err)
	}
	mt, err := maskTensor(n, S, mask)
	if err != nil {
		return fmt.Errorf("data: %s: %w", path, err)
	}
	return safetensors.WriteFile(path, []safetensors.Tensor{tt, mt}, map[string]string{MetaCaptions: jsonStrings(captions)})
}

// Prompts are text conditions to sample for.
type Prompts struct {
	Captions []string
	S, Dt    int
	Text     []float32 // [n,S,Dt]
	Mask     []float32 // [n,S], 0/1
}

// ReadPrompts reads a prompts file (or a dataset shard: its latents are
// ignored).
func ReadPrompts(path string) (*Prompts, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, err
	}
	txt, shape, err := f.Float32s(KeyTextEmbeddings)
	if err != nil {
		return nil, fmt.Errorf("data: prompts %s: %w", path, err)
	}
	if len(shape) != 3 {
		return nil, fmt.Errorf("data: prompts %s: text_embeddings has shape %v, want [n,S,Dt]", path, shape)
	}
	p := &Prompts{S: shape[1], Dt: shape[2], Text: txt}
	n := shape[0]
	if mt, ok := f.Tensor(KeyTextMask); ok {
		ints, err := mt.Int64s()
		if err != nil {
			if p.Mask, _, err = f.Float32s(KeyTextMask); err != nil {
				return nil, fmt.Errorf("data: prompts %s: text_mask: %w", path, err)
			}
		} else {
			p.Mask = make([]float32, len(ints))
			for i, v := range ints {
				p.Mask[i] = float32(v)
			}
		}
		if len(p.Mask) != n*p.S {
			return nil, fmt.Errorf("data: prompts %s: text_mask has %d values, want %d", path, len(p.Mask), n*p.S)
		}
	} else {
		p.Mask = make([]float32, n*p.S)
		for i := range p.Mask {
			p.Mask[i] = 1
		}
	}
	if c, ok := f.Metadata[MetaCaptions]; ok {
		if err := json.Unmarshal([]byte(c), &p.Captions); err != nil || len(p.Captions) != n {
			return nil, fmt.Errorf("data: prompts %s: metadata captions is not a list of %d strings", path, n)
		}
	} else {
		for i := 0; i < n; i++ {
			p.Captions = append(p.Captions, fmt.Sprintf("prompt %d", i))
		}
	}
	return p, nil
}
