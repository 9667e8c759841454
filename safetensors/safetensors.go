// Package safetensors reads and writes the safetensors format
// (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length, a JSON header (name → dtype, shape, data_offsets, plus an
// optional "__metadata__" map of strings) padded with spaces to a multiple of
// 8, then the raw little-endian tensor data. Files written here open in
// Python's safetensors; files read here are validated as strictly as the
// Python reader does (offsets in bounds, lengths matching shapes, the data
// region covered exactly with no overlap), and every error names the file,
// tensor and value at fault.
//
// Everyone in fmtrain reads and writes .safetensors through this package.
// Values are plain data: safe for concurrent reads, no shared state.
package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DType is a safetensors element type name.
type DType string

// The element types fmtrain uses.
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
	U8   DType = "U8"
	Bool DType = "BOOL"
)

// Size is the byte width of one element, 0 for an unknown type.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case I64:
		return 8
	case U8, Bool:
		return 1
	}
	return 0
}

// maxHeaderLen bounds the JSON header (Python's reader uses 100 MB).
const maxHeaderLen = 100 << 20

// metadataKey is the reserved header entry holding string metadata.
const metadataKey = "__metadata__"

// Tensor is one named tensor: its type, shape and raw little-endian bytes.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
}

// Numel is the number of elements (1 for a scalar of shape []).
func (t Tensor) Numel() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// File is a parsed safetensors file. Tensors are in the order of their data.
type File struct {
	Metadata map[string]string
	Tensors  []Tensor
	byName   map[string]int
}

// Tensor returns the tensor called name.
func (f *File) Tensor(name string) (Tensor, bool) {
	i, ok := f.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return f.Tensors[i], true
}

// Names lists the tensor names, sorted.
func (f *File) Names() []string {
	names := make([]string, len(f.Tensors))
	for i, t := range f.Tensors {
		names[i] = t.Name
	}
	sort.Strings(names)
	return names
}

// Float32s returns the tensor called name as float32 values (converted from
// F32, F16 or BF16), with an error naming the tensor when it is missing or
// has another type.
func (f *File) Float32s(name string) ([]float32, []int, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, nil, fmt.Errorf("safetensors: no tensor %q", name)
	}
	v, err := t.Float32s()
	return v, t.Shape, err
}

// ReadFile reads and validates the file at path.
func ReadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// headerEntry is one tensor's JSON header entry.
type headerEntry struct {
	DType       DType    `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// Parse validates a whole safetensors file held in data. Tensor data slices
// alias data.
func Parse(data []byte) (*File, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("safetensors: file is %d bytes, shorter than the 8-byte header length", len(data))
	}
	hlen := binary.LittleEndian.Uint64(data[:8])
	if hlen > maxHeaderLen {
		return nil, fmt.Errorf("safetensors: header length %d exceeds the %d-byte limit", hlen, maxHeaderLen)
	}
	if hlen > uint64(len(data)-8) {
		return nil, fmt.Errorf("safetensors: header length %d runs past the end of the %d-byte file (truncated?)", hlen, len(data))
	}
	header := data[8 : 8+hlen]
	if len(header) == 0 || header[0] != '{' {
		return nil, errors.New("safetensors: header does not start with '{'")
	}
	raw, err := decodeHeaderObject(header)
	if err != nil {
		return nil, err
	}
	body := data[8+hlen:]
	f := &File{byName: map[string]int{}}
	type span struct {
		name       string
		begin, end int64
	}
	var spans []span
	for _, kv := range raw {
		if kv.key == metadataKey {
			if err := json.Unmarshal(kv.value, &f.Metadata); err != nil {
				return nil, fmt.Errorf("safetensors: __metadata__ must map strings to strings: %w", err)
			}
			continue
		}
		if kv.key == "" {
			return nil, errors.New("safetensors: tensor with an empty name")
		}
		var e headerEntry
		dec := json.NewDecoder(bytes.NewReader(kv.value))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: bad header entry: %w", kv.key, err)
		}
		size := e.DType.Size()
		if size == 0 {
			return nil, fmt.Errorf("safetensors: tensor %q: unsupported dtype %q", kv.key, e.DType)
		}
		numel := int64(1)
		for _, s := range e.Shape {
			if s < 0 {
				return nil, fmt.Errorf("safetensors: tensor %q: negative dimension in shape %v", kv.key, e.Shape)
			}
			if s != 0 && numel > math.MaxInt64/int64(s) {
				return nil, fmt.Errorf("safetensors: tensor %q: shape %v overflows", kv.key, e.Shape)
			}
			numel *= int64(s)
		}
		begin, end := e.DataOffsets[0], e.DataOffsets[1]
		if begin < 0 || end < begin || end > int64(len(body)) {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] outside the %d-byte data region", kv.key, begin, end, len(body))
		}
		if numel > math.MaxInt64/int64(size) || end-begin != numel*int64(size) {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] hold %d bytes, but %s%v needs %d", kv.key, begin, end, end-begin, e.DType, e.Shape, numel*int64(size))
		}
		f.byName[kv.key] = len(f.Tensors)
		f.Tensors = append(f.Tensors, Tensor{Name: kv.key, DType: e.DType, Shape: e.Shape, Data: body[begin:end:end]})
		spans = append(spans, span{kv.key, begin, end})
	}
	// The data region must be covered exactly: sorted by offset, each tensor
	// starts where the previous one ended and the last ends at the file end.
	order := make([]int, len(spans))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return spans[order[a]].begin < spans[order[b]].begin })
	var pos int64
	sorted := make([]Tensor, len(order))
	for i, j := range order {
		s := spans[j]
		if s.begin != pos {
			if s.begin < pos {
				return nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] overlap the previous tensor (ends at %d)", s.name, s.begin, s.end, pos)
			}
			return nil, fmt.Errorf("safetensors: tensor %q: gap in the data region before offset %d (previous tensor ends at %d)", s.name, s.begin, pos)
		}
		pos = s.end
		sorted[i] = f.Tensors[j]
	}
	if pos != int64(len(body)) {
		return nil, fmt.Errorf("safetensors: tensors cover %d of the %d data bytes (trailing bytes or truncated header)", pos, len(body))
	}
	f.Tensors = sorted
	for i, t := range f.Tensors {
		f.byName[t.Name] = i
	}
	return f, nil
}

type rawEntry struct {
	key   string
	value json.RawMessage
}

// decodeHeaderObject decodes the top-level JSON object keeping duplicate
// keys visible (encoding/json would silently keep the last one).
func decodeHeaderObject(header []byte) ([]rawEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(header))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("safetensors: header is not a JSON object: %v", err)
	}
	seen := map[string]bool{}
	var out []rawEntry
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("safetensors: header JSON: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("safetensors: header JSON: key %v is not a string", tok)
		}
		if seen[key] {
			return nil, fmt.Errorf("safetensors: header names tensor %q twice", key)
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("safetensors: header JSON at %q: %w", key, err)
		}
		out = append(out, rawEntry{key, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("safetensors: header JSON: %w", err)
	}
	// Only padding may follow the object.
	rest, _ := io.ReadAll(dec.Buffered())
	if len(strings.TrimRight(string(rest), " \t\r\n\x00")) != 0 {
		return nil, errors.New("safetensors: trailing bytes after the header JSON object")
	}
	return out, nil
}

// Write writes tensors (sorted by name; names must be unique) and metadata
// (may be nil) in safetensors format.
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	sorted := append([]Tensor(nil), tensors...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	header := map[string]any{}
	if len(metadata) > 0 {
		header[metadataKey] = metadata
	}
	var offset int64
	for i, t := range sorted {
		if t.Name == "" || t.Name == metadataKey {
			return fmt.Errorf("safetensors: invalid tensor name %q", t.Name)
		}
		if i > 0 && sorted[i-1].Name == t.Name {
			return fmt.Errorf("safetensors: tensor %q given twice", t.Name)
		}
		if t.DType.Size() == 0 {
			return fmt.Errorf("safetensors: tensor %q: unsupported dtype %q", t.Name, t.DType)
		}
		for _, s := range t.Shape {
			if s < 0 {
				return fmt.Errorf("safetensors: tensor %q: negative dimension in shape %v", t.Name, t.Shape)
			}
		}
		if want := t.Numel() * t.DType.Size(); len(t.Data) != want {
			return fmt.Errorf("safetensors: tensor %q: %d data bytes, but %s%v needs %d", t.Name, len(t.Data), t.DType, t.Shape, want)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		header[t.Name] = headerEntry{DType: t.DType, Shape: shape, DataOffsets: [2]int64{offset, offset + int64(len(t.Data))}}
		offset += int64(len(t.Data))
	}
	js, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("safetensors: encoding header: %w", err)
	}
	if pad := (8 - len(js)%8) % 8; pad > 0 {
		js = append(js, bytes.Repeat([]byte{' '}, pad)...)
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(js)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return fmt.Errorf("safetensors: writing header: %w", err)
	}
	if _, err := w.Write(js); err != nil {
		return fmt.Errorf("safetensors: writing header: %w", err)
	}
	for _, t := range sorted {
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("safetensors: writing tensor %q: %w", t.Name, err)
		}
	}
	return nil
}

// WriteFile writes the file at path through a temporary file in the same
// directory, synced and renamed, so a reader never sees a partial file.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := Write(bw, tensors, metadata); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("safetensors: writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("safetensors: syncing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("safetensors: closing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return nil
}
