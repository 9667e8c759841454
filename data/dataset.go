package data

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/fmtrain/fmtrain/safetensors"
)

// OpenOptions tune Open.
type OpenOptions struct {
	// Verify hashes every shard and compares it with the manifest's sha256
	// (a full read of the dataset). Without it, Open still checks each
	// shard's size and header, which catches truncation and most damage.
	Verify bool
}

// Dataset is an opened, validated dataset. Samples are read on demand by
// offset, so the dataset need not fit in memory. Safe for concurrent use.
type Dataset struct {
	Manifest *Manifest
	shards   []*shardFile
	starts   []int // first global index of each shard
	n        int
}

type shardFile struct {
	path     string
	f        *os.File
	captions []string
	lat      tensorInfo
	txt      tensorInfo
	mask     tensorInfo
}

type tensorInfo struct {
	dtype  safetensors.DType
	shape  []int
	offset int64 // absolute file offset of the data
	row    int   // elements per sample
}

// Open reads the manifest at path and validates every shard it lists:
// present, the recorded size, a well-formed safetensors header whose tensors
// have the manifest's shapes, and (with Verify) the recorded sha256. Any
// problem is an error naming the shard file.
func Open(path string, opts OpenOptions) (*Dataset, error) {
	m, err := ReadManifest(path)
	if err != nil {
		return nil, err
	}
	d := &Dataset{Manifest: m}
	dir := filepath.Dir(path)
	for i, s := range m.Shards {
		sf, err := openShard(resolve(dir, s.Path), s, m, opts.Verify)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("data: shard %d: %w", i, err)
		}
		d.starts = append(d.starts, d.n)
		d.shards = append(d.shards, sf)
		d.n += s.NumSamples
	}
	return d, nil
}

// Close releases the shard files.
func (d *Dataset) Close() error {
	var errs []error
	for _, s := range d.shards {
		errs = append(errs, s.f.Close())
	}
	return errors.Join(errs...)
}

// Len is the number of samples.
func (d *Dataset) Len() int { return d.n }

// LatentSize, TextSize and MaskSize are one sample's element counts.
func (d *Dataset) LatentSize() int { return prod(d.Manifest.LatentShape) }
func (d *Dataset) TextSize() int   { return d.Manifest.TextLen * d.Manifest.TextDim }
func (d *Dataset) MaskSize() int   { return d.Manifest.TextLen }

// Read fills one sample's latents, text embeddings and mask (float32, mask
// 0/1) and returns its caption ("" if the shard has none).
func (d *Dataset) Read(i int, lat, txt, mask []float32) (string, error) {
	if i < 0 || i >= d.n {
		return "", fmt.Errorf("data: sample %d out of range [0, %d)", i, d.n)
	}
	k := sort.Search(len(d.starts), func(k int) bool { return d.starts[k] > i }) - 1
	s, j := d.shards[k], i-d.starts[k]
	if err := s.readRow(s.lat, j, lat); err != nil {
		return "", err
	}
	if err := s.readRow(s.txt, j, txt); err != nil {
		return "", err
	}
	if s.mask.row == 0 {
		for k := range mask {
			mask[k] = 1
		}
	} else if err := s.readRow(s.mask, j, mask); err != nil {
		return "", err
	}
	for _, v := range mask {
		if v != 0 && v != 1 {
			return "", fmt.Errorf("data: %s: text_mask of sample %d holds %v; masks are 0 or 1", s.path, j, v)
		}
	}
	for _, v := range lat {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return "", fmt.Errorf("data: %s: latents of sample %d are not finite", s.path, j)
		}
	}
	if s.captions != nil {
		return s.captions[j], nil
	}
	return "", nil
}

func (s *shardFile) readRow(t tensorInfo, j int, out []float32) error {
	if len(out) != t.row {
		return fmt.Errorf("data: %s: buffer of %d for a row of %d", s.path, len(out), t.row)
	}
	size := t.dtype.Size()
	buf := make([]byte, t.row*size)
	if _, err := s.f.ReadAt(buf, t.offset+int64(j*t.row*size)); err != nil {
		return fmt.Errorf("data: reading %s: %w", s.path, err)
	}
	for k := range out {
		b := buf[k*size:]
		switch t.dtype {
		case safetensors.F32:
			out[k] = math.Float32frombits(binary.LittleEndian.Uint32(b))
		case safetensors.F16:
			out[k] = safetensors.F16ToFloat32(binary.LittleEndian.Uint16(b))
		case safetensors.BF16:
			out[k] = safetensors.BF16ToFloat32(binary.LittleEndian.Uint16(b))
		case safetensors.I64:
			out[k] = float32(int64(binary.LittleEndian.Uint64(b)))
		case safetensors.U8, safetensors.Bool:
			out[k] = float32(b[0])
		}
	}
	return nil
}

func openShard(path string, s Shard, m *Manifest, verify bool) (*shardFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %w", err) // os errors name the path
	}
	sf, err := parseShard(f, path, s, m, verify)
	if err != nil {
		f.Close()
		return nil, err
	}
	return sf, nil
}

func parseShard(f *os.File, path string, s Shard, m *Manifest, verify bool) (*shardFile, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if s.Bytes > 0 && st.Size() != s.Bytes {
		return nil, fmt.Errorf("%s is %d bytes, the manifest says %d: truncated or replaced", path, st.Size(), s.Bytes)
	}
	if verify && s.SHA256 != "" {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, st.Size())); err != nil {
			return nil, fmt.Errorf("hashing %s: %w", path, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != s.SHA256 {
			return nil, fmt.Errorf("%s is corrupt: sha256 %s, the manifest says %s", path, got, s.SHA256)
		}
	}
	var lenBuf [8]byte
	if _, err := f.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("%s: not a safetensors file (no header): %w", path, err)
	}
	hlen := binary.LittleEndian.Uint64(lenBuf[:])
	if hlen == 0 || hlen > 100<<20 || int64(hlen)+8 > st.Size() {
		return nil, fmt.Errorf("%s: not a safetensors file (header length %d, file %d bytes)", path, hlen, st.Size())
	}
	hdr := make([]byte, hlen)
	if _, err := f.ReadAt(hdr, 8); err != nil {
		return nil, fmt.Errorf("%s: reading header: %w", path, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("%s: corrupt safetensors header: %w", path, err)
	}
	dataStart := int64(8 + hlen)
	dataLen := st.Size() - dataStart
	sf := &shardFile{path: path, f: f}
	n := s.NumSamples
	want := map[string][]int{
		KeyLatents:        append([]int{n}, m.LatentShape...),
		KeyTextEmbeddings: {n, m.TextLen, m.TextDim},
		KeyTextMask:       {n, m.TextLen},
	}
	infos := map[string]*tensorInfo{KeyLatents: &sf.lat, KeyTextEmbeddings: &sf.txt, KeyTextMask: &sf.mask}
	for name, info := range infos {
		msg, ok := raw[name]
		if !ok && name == KeyTextMask {
			continue // no mask: every token is kept
		}
		if !ok {
			return nil, fmt.Errorf("%s has no %q tensor", path, name)
		}
		var h struct {
			DType   safetensors.DType `json:"dtype"`
			Shape   []int             `json:"shape"`
			Offsets [2]int64          `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &h); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", path, name, err)
		}
		if !equalInts(h.Shape, want[name]) {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, the manifest implies %v", path, name, h.Shape, want[name])
		}
		okType := h.DType == safetensors.F32 || h.DType == safetensors.F16 || h.DType == safetensors.BF16
		if name == KeyTextMask {
			okType = okType || h.DType == safetensors.Bool || h.DType == safetensors.U8 || h.DType == safetensors.I64
		}
		if !okType {
			return nil, fmt.Errorf("%s: tensor %q has dtype %s, which a dataset cannot hold", path, name, h.DType)
		}
		size := int64(prod(h.Shape) * h.DType.Size())
		if h.Offsets[1]-h.Offsets[0] != size || h.Offsets[0] < 0 || h.Offsets[1] > dataLen {
			return nil, fmt.Errorf("%s: tensor %q has data offsets %v, outside the file or not %d bytes", path, name, h.Offsets, size)
		}
		*info = tensorInfo{dtype: h.DType, shape: h.Shape, offset: dataStart + h.Offsets[0], row: prod(h.Shape[1:])}
	}
	if meta, ok := raw["__metadata__"]; ok {
		var md map[string]string
		if err := json.Unmarshal(meta, &md); err != nil {
			return nil, fmt.Errorf("%s: __metadata__: %w", path, err)
		}
		if c, ok := md[MetaCaptions]; ok {
			if err := json.Unmarshal([]byte(c), &sf.captions); err != nil {
				return nil, fmt.Errorf("%s: metadata %q is not a JSON list of strings: %w", path, MetaCaptions, err)
			}
			if len(sf.captions) != n {
				return nil, fmt.Errorf("%s: %d captions for %d samples", path, len(sf.captions), n)
			}
		}
	}
	return sf, nil
}

func prod(xs []int) int {
	p := 1
	for _, x := range xs {
		p *= x
	}
	return p
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
