package flow

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"
)

// compareValue checks one prepared-input (or model-call) value against its
// JSON record: tensor schema, null, number, list (ints, img_shapes) or
// object (attention_kwargs).
func compareValue(t *testing.T, name string, got any, raw json.RawMessage, maxULP int64, atol float64) {
	t.Helper()
	var probe any
	if err := json.Unmarshal(raw, &probe); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	switch w := probe.(type) {
	case nil:
		if got != nil {
			if tt, ok := got.(*Tensor); !ok || tt != nil {
				t.Errorf("%s = %v, want None", name, got)
			}
		}
	case map[string]any:
		if _, isTensor := w["shape"]; isTensor {
			var j jtensor
			if err := json.Unmarshal(raw, &j); err != nil {
				t.Fatal(err)
			}
			g, ok := got.(*Tensor)
			if !ok {
				t.Errorf("%s = %T, want a tensor %v", name, got, j.Shape)
				return
			}
			compareTensor(t, name, g, j.tensor(t), maxULP, atol)
			return
		}
		g, ok := got.(map[string]float64)
		if !ok {
			t.Errorf("%s = %T %v, want %v", name, got, got, w)
			return
		}
		if len(g) != len(w) {
			t.Errorf("%s = %v, want %v", name, g, w)
		}
		for k, v := range w {
			if g[k] != v {
				t.Errorf("%s[%s] = %v, want %v", name, k, g[k], v)
			}
		}
	case float64:
		switch g := got.(type) {
		case int:
			if float64(g) != w {
				t.Errorf("%s = %v, want %v", name, g, w)
			}
		case float64:
			if g != w {
				t.Errorf("%s = %v, want %v", name, g, w)
			}
		default:
			t.Errorf("%s = %T %v, want %v", name, got, got, w)
		}
	case []any:
		if gs, ok := got.([][]ImgShape); ok {
			var want [][]ImgShape
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if fmt.Sprint(gs) != fmt.Sprint(want) {
				t.Errorf("%s = %v, want %v", name, gs, want)
			}
			return
		}
		var want []int
		if err := json.Unmarshal(raw, &want); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if g, ok := got.([]int); !ok || !slices.Equal(g, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	default:
		t.Errorf("%s: unexpected record %v", name, probe)
	}
}

// compareInputs checks the key set and every value.
func compareInputs(t *testing.T, name string, got Inputs, want map[string]json.RawMessage, maxULP int64, atol float64) {
	t.Helper()
	gk, wk := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))
	if !slices.Equal(gk, wk) {
		t.Errorf("%s keys = %v, want %v", name, gk, wk)
	}
	for k, raw := range want {
		if v, ok := got[k]; ok {
			compareValue(t, name+"."+k, v, raw, maxULP, atol)
		}
	}
}

// callRecord is what the test models remember of their call.
type callRecord struct {
	NPositional int
	KwargNames  []string
}

type modelCallRecord struct {
	NPositional int      `json:"n_positional"`
	KwargNames  []string `json:"kwarg_names"`
}

func (r callRecord) check(t *testing.T, want *modelCallRecord) {
	t.Helper()
	if want == nil {
		return
	}
	if r.NPositional != want.NPositional || !slices.Equal(r.KwargNames, slices.Sorted(slices.Values(want.KwargNames))) {
		t.Errorf("model call: %d positional, kwargs %v; want %d, %v", r.NPositional, r.KwargNames, want.NPositional, want.KwargNames)
	}
}

func recordCall(c *ModelCall) callRecord {
	return callRecord{NPositional: len(c.Args), KwargNames: slices.Sorted(maps.Keys(c.Kwargs))}
}
