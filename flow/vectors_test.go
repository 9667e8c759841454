package flow

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/internal/shareddata"
)

// Helpers that load shared/testdata/flow and replay its recorded draws.

func loadVectors(t *testing.T, name string, v any) {
	t.Helper()
	path, err := shareddata.Path("testdata", "flow", name)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// jnum is a JSON number that may be the strings "NaN", "Infinity", "-Infinity".
type jnum float64

func (n *jnum) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		switch s {
		case "NaN":
			*n = jnum(math.NaN())
		case "Infinity":
			*n = jnum(math.Inf(1))
		case "-Infinity":
			*n = jnum(math.Inf(-1))
		default:
			return fmt.Errorf("bad number %q", s)
		}
		return nil
	}
	var bl bool
	if json.Unmarshal(b, &bl) == nil {
		*n = 0
		if bl {
			*n = 1
		}
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*n = jnum(f)
	return nil
}

// jtensor is the vectors' tensor schema.
type jtensor struct {
	Shape []int  `json:"shape"`
	DType string `json:"dtype"`
	Data  []jnum `json:"data"`
}

func (j *jtensor) tensor(t *testing.T) *Tensor {
	t.Helper()
	if j == nil {
		return nil
	}
	d, err := ParseDType(j.DType)
	if err != nil {
		t.Fatal(err)
	}
	out := NewTensor(d, j.Shape...)
	if len(j.Data) != out.Numel() {
		t.Fatalf("tensor %v: %d values", j.Shape, len(j.Data))
	}
	for i, v := range j.Data {
		if d.IsFloat() {
			out.Data[i] = float32(v)
		} else {
			out.Ints[i] = int64(v)
		}
	}
	return out
}

func f32s(x []jnum) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

// rngCall is one recorded draw.
type rngCall struct {
	Fn     string          `json:"fn"`
	Shape  []int           `json:"shape"`
	Args   map[string]any  `json:"args"`
	Values json.RawMessage `json:"values"`
}

// replayRNG returns recorded draws in order and records any mismatch
// between what the code asks for and what NeMo did.
type replayRNG struct {
	calls []rngCall
	next  int
	errs  []string
}

var _ RNG = (*replayRNG)(nil)

func newReplay(calls []rngCall) *replayRNG { return &replayRNG{calls: calls} }

func (r *replayRNG) take(fn string, n int, args map[string]float64) []float32 {
	if r.next >= len(r.calls) {
		r.errs = append(r.errs, fmt.Sprintf("draw %d: %s(%d) but NeMo made only %d draws", r.next, fn, n, len(r.calls)))
		return make([]float32, n)
	}
	c := r.calls[r.next]
	r.next++
	if c.Fn != fn {
		r.errs = append(r.errs, fmt.Sprintf("draw %d: got %s, NeMo called %s", r.next-1, fn, c.Fn))
	}
	if fn != "random.random" && numel(c.Shape) != n {
		r.errs = append(r.errs, fmt.Sprintf("draw %d: %s of %d values, NeMo drew shape %v", r.next-1, fn, n, c.Shape))
	}
	for k, want := range args {
		if got, ok := c.Args[k].(float64); !ok || got != want {
			r.errs = append(r.errs, fmt.Sprintf("draw %d: %s arg %s=%v, NeMo passed %v", r.next-1, fn, k, want, c.Args[k]))
		}
	}
	var vals []jnum
	if err := json.Unmarshal(c.Values, &vals); err != nil {
		var one jnum
		if err := json.Unmarshal(c.Values, &one); err != nil {
			r.errs = append(r.errs, "bad values: "+err.Error())
		}
		vals = []jnum{one}
	}
	out := f32s(vals)
	if len(out) != n {
		r.errs = append(r.errs, fmt.Sprintf("draw %d: %d recorded values for %d wanted", r.next-1, len(out), n))
		out = append(out, make([]float32, max(0, n-len(out)))...)[:n]
	}
	return out
}

func (r *replayRNG) Random() float64 {
	if r.next < len(r.calls) && r.calls[r.next].Fn == "random.random" {
		var v float64
		_ = json.Unmarshal(r.calls[r.next].Values, &v)
		r.next++
		return v // float64, not rounded through float32
	}
	r.take("random.random", 1, nil)
	return 0
}
func (r *replayRNG) Rand(n int) []float32 { return r.take("torch.rand", n, nil) }
func (r *replayRNG) Normal(mean, std float64, n int) []float32 {
	return r.take("torch.normal", n, map[string]float64{"mean": mean, "std": std})
}
func (r *replayRNG) Randn(n int) []float32 { return r.take("torch.randn_like", n, nil) }
func (r *replayRNG) Beta(a, b float64, n int) []float32 {
	return r.take("Beta.sample", n, map[string]float64{"alpha": a, "beta": b})
}

// check fails t unless every recorded draw was consumed, in order.
func (r *replayRNG) check(t *testing.T) {
	t.Helper()
	if r.next != len(r.calls) {
		r.errs = append(r.errs, fmt.Sprintf("%d of %d recorded draws consumed", r.next, len(r.calls)))
	}
	if len(r.errs) > 0 {
		t.Errorf("rng replay:\n  %s", strings.Join(r.errs, "\n  "))
	}
}

// ulpDiff is the distance in float32 units in the last place (NaN == NaN).
func ulpDiff(a, b float32) int64 {
	if a == b || (a != a && b != b) {
		return 0
	}
	if a != a || b != b {
		return math.MaxInt64
	}
	ia, ib := int64(math.Float32bits(a)), int64(math.Float32bits(b))
	if (ia < 0x80000000) == (ib < 0x80000000) {
		d := ia - ib
		if d < 0 {
			d = -d
		}
		return d
	}
	// opposite signs: distance through zero
	return (ia & 0x7FFFFFFF) + (ib & 0x7FFFFFFF)
}

// closeF32 reports whether got is within maxULP ulps or atol of want.
func closeF32(got, want float32, maxULP int64, atol float64) bool {
	if ulpDiff(got, want) <= maxULP {
		return true
	}
	return math.Abs(float64(got)-float64(want)) <= atol
}

// compareF32 fails with the first mismatching elements, named.
func compareF32(t *testing.T, name string, got, want []float32, maxULP int64, atol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", name, len(got), len(want))
		return
	}
	bad := 0
	for i := range got {
		if !closeF32(got[i], want[i], maxULP, atol) {
			if bad < 5 {
				t.Errorf("%s[%d] = %v (%#x), want %v (%#x), %d ulp", name, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]), ulpDiff(got[i], want[i]))
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d mismatches in all", name, bad)
	}
}

// compareTensor checks shape, dtype and values (exact unless tolerances).
func compareTensor(t *testing.T, name string, got *Tensor, want *Tensor, maxULP int64, atol float64) {
	t.Helper()
	if got == nil || want == nil {
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
		return
	}
	if !slices.Equal(got.Shape, want.Shape) {
		t.Errorf("%s: shape %v, want %v", name, got.Shape, want.Shape)
		return
	}
	if got.DType != want.DType {
		t.Errorf("%s: dtype %v, want %v", name, got.DType, want.DType)
	}
	if want.DType.IsFloat() {
		compareF32(t, name, got.Float32s(), want.Data, maxULP, atol)
	} else if !slices.Equal(got.Ints, want.Ints) {
		t.Errorf("%s = %v, want %v", name, got.Ints, want.Ints)
	}
}
