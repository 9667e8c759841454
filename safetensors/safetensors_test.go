package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/internal/shareddata"
)

// TestReadReferenceVectors reads a file written by Python's safetensors and
// re-writes it: the data region must come out byte-identical and the header
// must describe the same tensors and metadata.
func TestReadReferenceVectors(t *testing.T) {
	path, err := shareddata.Path("testdata", "fm-dit", "a_image.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata["layout"] != "image" || !strings.Contains(f.Metadata["config"], "hidden_size") {
		t.Fatalf("metadata not read: %v", f.Metadata)
	}
	w, ok := f.Tensor("blocks.0.attn.qkv.weight")
	if !ok || !reflect.DeepEqual(w.Shape, []int{96, 32}) || w.DType != F32 {
		t.Fatalf("blocks.0.attn.qkv.weight = %+v, %v", w.Shape, ok)
	}
	loss, _, err := f.Float32s("loss")
	if err != nil || len(loss) != 1 || !(loss[0] > 0) {
		t.Fatalf("loss = %v, %v", loss, err)
	}

	var buf bytes.Buffer
	if err := Write(&buf, f.Tensors, f.Metadata); err != nil {
		t.Fatal(err)
	}
	out := buf.Bytes()
	hOrig := binary.LittleEndian.Uint64(orig)
	hOut := binary.LittleEndian.Uint64(out)
	if hOut%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", hOut)
	}
	if !bytes.Equal(orig[8+hOrig:], out[8+hOut:]) {
		t.Error("re-written data region differs from the Python-written one")
	}
	var jOrig, jOut map[string]any
	if err := json.Unmarshal(orig[8:8+hOrig], &jOrig); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out[8:8+hOut], &jOut); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(jOrig, jOut) {
		t.Error("re-written header differs from the Python-written one")
	}
}

func TestRoundTripAllDTypes(t *testing.T) {
	f32, _ := FromFloat32("a.f32", F32, []int{2, 3}, []float32{1, -2, 3.5, 0, float32(math.Inf(1)), 1e-30})
	bf, _ := FromFloat32("b.bf16", BF16, []int{3}, []float32{1, -2.5, 3})
	f16, _ := FromFloat32("c.f16", F16, []int{2}, []float32{0.5, -65504})
	i64, _ := FromInt64("d.i64", []int{2}, []int64{-1, 1 << 40})
	u8, _ := FromBytes("e.u8", U8, []int{3}, []byte{0, 7, 255})
	bl, _ := FromBytes("f.bool", Bool, []int{2}, []byte{1, 0})
	scalar, _ := FromFloat32("g.scalar", F32, nil, []float32{42})
	empty, _ := FromFloat32("h.empty", F32, []int{0, 4}, nil)
	in := []Tensor{i64, f32, bf, f16, u8, bl, scalar, empty}
	meta := map[string]string{"step": "12", "config": `{"a":1}`}
	dir := t.TempDir()
	path := filepath.Join(dir, "x.safetensors")
	if err := WriteFile(path, in, meta); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Metadata, meta) {
		t.Errorf("metadata %v, want %v", f.Metadata, meta)
	}
	if got := f.Names(); !reflect.DeepEqual(got, []string{"a.f32", "b.bf16", "c.f16", "d.i64", "e.u8", "f.bool", "g.scalar", "h.empty"}) {
		t.Errorf("names %v", got)
	}
	for _, want := range in {
		got, ok := f.Tensor(want.Name)
		if !ok || got.DType != want.DType || !bytes.Equal(got.Data, want.Data) || got.Numel() != want.Numel() {
			t.Errorf("tensor %s: got %+v want %+v", want.Name, got, want)
		}
	}
	v, _, err := f.Float32s("b.bf16")
	if err != nil || !reflect.DeepEqual(v, []float32{1, -2.5, 3}) {
		t.Errorf("bf16 values %v, %v", v, err)
	}
	v, _, _ = f.Float32s("c.f16")
	if !reflect.DeepEqual(v, []float32{0.5, -65504}) {
		t.Errorf("f16 values %v", v)
	}
	iv, err := f.Tensors[3].Int64s()
	if err != nil || !reflect.DeepEqual(iv, []int64{-1, 1 << 40}) {
		t.Errorf("i64 values %v, %v", iv, err)
	}
	if _, err := f.Tensors[0].Int64s(); err == nil {
		t.Error("Int64s of an F32 tensor should fail")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestF16AllPatternsRoundTrip(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F16ToFloat32(uint16(h))
		if f != f {
			if g := F16ToFloat32(Float32ToF16(f)); g == g {
				t.Fatalf("NaN %#04x did not stay NaN", h)
			}
			continue
		}
		if back := Float32ToF16(f); back != uint16(h) {
			t.Fatalf("f16 %#04x -> %g -> %#04x", h, f, back)
		}
	}
	// Rounding: ties to even, overflow to Inf, underflow to zero.
	cases := []struct {
		in   float32
		want uint16
	}{
		{1 + 1.0/2048, 0x3c00},         // tie between 1 and 1+2^-10 → even (1)
		{1 + 3.0/2048, 0x3c02},         // tie → even (1+2^-9)
		{65520, 0x7c00},                // rounds past the max → Inf
		{float32(math.Pow(2, -26)), 0}, // below half the smallest subnormal
		{float32(math.Pow(2, -24)), 1}, // smallest subnormal
	}
	for _, c := range cases {
		if got := Float32ToF16(c.in); got != c.want {
			t.Errorf("Float32ToF16(%g) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
}

func TestBF16Rounding(t *testing.T) {
	cases := []struct {
		in   uint32
		want uint16
	}{
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81}, // above half
		{0x7f7fffff, 0x7f80}, // max float rounds to Inf
	}
	for _, c := range cases {
		if got := Float32ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("Float32ToBF16(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if v := BF16ToFloat32(Float32ToBF16(float32(math.NaN()))); v == v {
		t.Error("NaN did not stay NaN")
	}
}

// build assembles a file from a raw header string and data bytes.
func build(header string, data []byte) []byte {
	out := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	return append(append(out, header...), data...)
}

func TestParseRejectsBadFiles(t *testing.T) {
	good := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"short", []byte{1, 2, 3}, "shorter than"},
		{"header past end", append([]byte{0xff, 0, 0, 0, 0, 0, 0, 0}, '{'), "runs past the end"},
		{"huge header", []byte{0, 0, 0, 0, 0, 0, 0, 1}, "exceeds"},
		{"not object", build(`[1]     `, nil), "does not start with"},
		{"bad json", build(`{"a":`, nil), "header JSON"},
		{"truncated data", build(good, make([]byte, 4)), "outside the 4-byte data region"},
		{"trailing data", build(good, make([]byte, 12)), "cover 8 of the 12"},
		{"wrong length", build(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), "needs 12"},
		{"bad dtype", build(`{"a":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), `unsupported dtype "F99"`},
		{"negative dim", build(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, make([]byte, 8)), "negative dimension"},
		{"duplicate", build(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, make([]byte, 2)), `"a" twice`},
		{"overlap", build(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}`, make([]byte, 3)), "overlap"},
		{"gap", build(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, make([]byte, 2)), "gap"},
		{"unknown field", build(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}`, make([]byte, 1)), "bad header entry"},
		{"bad metadata", build(`{"__metadata__":{"k":1}}`, nil), "__metadata__"},
		{"garbage after header", build(`{} x`, nil), "trailing bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.file)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
	if _, err := Parse(build(good, make([]byte, 8))); err != nil {
		t.Fatalf("good file rejected: %v", err)
	}
}

func TestWriteRejectsBadTensors(t *testing.T) {
	var buf bytes.Buffer
	a, _ := FromFloat32("a", F32, []int{1}, []float32{1})
	if err := Write(&buf, []Tensor{a, a}, nil); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate: %v", err)
	}
	bad := Tensor{Name: "b", DType: F32, Shape: []int{2}, Data: make([]byte, 4)}
	if err := Write(&buf, []Tensor{bad}, nil); err == nil || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("short data: %v", err)
	}
	if _, err := FromFloat32("c", F32, []int{3}, []float32{1}); err == nil {
		t.Error("FromFloat32 with the wrong count should fail")
	}
	if _, err := FromBytes("d", Bool, []int{1}, []byte{2}); err == nil {
		t.Error("BOOL value 2 should fail")
	}
}
