package flow

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
)

type adapterCase struct {
	Context struct {
		NoisyLatents   *jtensor                   `json:"noisy_latents"`
		Latents        *jtensor                   `json:"latents"`
		Timesteps      *jtensor                   `json:"timesteps"`
		Sigma          *jtensor                   `json:"sigma"`
		TaskType       string                     `json:"task_type"`
		DataType       string                     `json:"data_type"`
		DType          string                     `json:"dtype"`
		CFGDropoutProb float64                    `json:"cfg_dropout_prob"`
		Batch          map[string]json.RawMessage `json:"batch"`
	} `json:"context"`
	AdapterKwargs          map[string]any             `json:"adapter_kwargs"`
	RNGCalls               []rngCall                  `json:"rng_calls"`
	PreparedInputs         map[string]json.RawMessage `json:"prepared_inputs"`
	ModelCall              *modelCallRecord           `json:"model_call"`
	Prediction             *jtensor                   `json:"prediction"`
	AuxiliaryLosses        map[string]float64         `json:"auxiliary_losses"`
	InputsAfterForwardKeys []string                   `json:"inputs_after_forward_keys"`
	Note                   string                     `json:"note"`
	ComputeLoss            *struct {
		ModelPred *jtensor `json:"model_pred"`
		Target    *jtensor `json:"target"`
		Loss      *jtensor `json:"loss"`
	} `json:"compute_loss"`
}

// parseBatch turns a recorded batch into a Batch: tensors, lists of
// tensors (context_latents) and strings.
func parseBatch(t *testing.T, raw map[string]json.RawMessage) Batch {
	t.Helper()
	b := Batch{}
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			b[k] = s
			continue
		}
		var list []*jtensor
		if json.Unmarshal(v, &list) == nil {
			ts := make([]*Tensor, len(list))
			for i, j := range list {
				ts[i] = j.tensor(t)
			}
			b[k] = ts
			continue
		}
		var j jtensor
		if err := json.Unmarshal(v, &j); err != nil {
			t.Fatalf("batch[%s]: %v", k, err)
		}
		b[k] = j.tensor(t)
	}
	return b
}

// arangeModel is the vectors' fake model: each output (shaped as shapes
// computes from the call) holds (arange(n) + offset)/div, offset running
// over the tuple unless perOutputDiv resets it.
type arangeModel struct {
	shapes  func(c *ModelCall) [][]int
	divs    []float32 // per output; offsets restart per output when set
	reject  []string  // keywords the model's forward lacks (KwargFilter)
	call    *ModelCall
	record  callRecord
	filters bool
}

func (m *arangeModel) Forward(_ context.Context, c *ModelCall) ([]*Tensor, error) {
	m.call, m.record = c, recordCall(c)
	var out []*Tensor
	offset := 0
	for i, s := range m.shapes(c) {
		t := NewTensor(Float32, s...)
		div := float32(8)
		if m.divs != nil {
			div, offset = m.divs[i], 0
		}
		for k := range t.Data {
			t.Data[k] = float32(k+offset) / div
		}
		offset += t.Numel()
		out = append(out, t)
	}
	return out, nil
}

type filteringArangeModel struct{ *arangeModel }

func (m filteringArangeModel) AcceptsKwarg(name string) bool { return !slices.Contains(m.reject, name) }

func kwShape(name string) func(c *ModelCall) [][]int {
	return func(c *ModelCall) [][]int { return [][]int{slices.Clone(c.Tensor(name).Shape)} }
}

func TestAdapterVectors(t *testing.T) {
	for _, tc := range []struct {
		file, adapter string
		model         func() Model
	}{
		{"adapter_simple.json", "simple", func() Model { return &arangeModel{shapes: kwShape("hidden_states")} }},
		{"adapter_flux.json", "flux", func() Model { return &arangeModel{shapes: kwShape("hidden_states")} }},
		{"adapter_flux2.json", "flux2", func() Model { return &arangeModel{shapes: kwShape("hidden_states")} }},
		{"adapter_qwen_image.json", "qwen_image", func() Model { return &arangeModel{shapes: kwShape("hidden_states")} }},
		{"adapter_qwen_image_edit.json", "qwen_image_edit", func() Model { return &arangeModel{shapes: kwShape("hidden_states")} }},
		{"adapter_hunyuan.json", "hunyuan", func() Model {
			return &arangeModel{shapes: func(c *ModelCall) [][]int {
				s := slices.Clone(c.Args[0].(*Tensor).Shape)
				s[1] = (s[1] - 1) / 2 // the velocity has C channels, not 2C+1
				return [][]int{s}
			}}
		}},
		{"adapter_ltx2.json", "ltx2", func() Model {
			return filteringArangeModel{&arangeModel{
				shapes: func(c *ModelCall) [][]int {
					return [][]int{slices.Clone(c.Tensor("hidden_states").Shape), slices.Clone(c.Tensor("audio_hidden_states").Shape)}
				},
				divs:   []float32{8, 16},
				reject: []string{"sigma", "audio_sigma", "fps", "audio_num_frames"},
			}}
		}},
	} {
		var f struct {
			Cases           []adapterCase `json:"cases"`
			MissingKeyError string        `json:"missing_key_error"`
		}
		loadVectors(t, tc.file, &f)
		if len(f.Cases) == 0 {
			t.Fatalf("%s: no cases", tc.file)
		}
		for i, c := range f.Cases {
			t.Run(tc.adapter+"/"+itoa(i), func(t *testing.T) {
				kw := c.AdapterKwargs
				// Flux, Flux2 and Qwen cases record their constructor
				// arguments only through the output (and the note): a
				// guidance tensor holds guidance_scale, and for Flux2/Qwen
				// its presence means use_guidance_embeds.
				if tc.adapter == "flux" || tc.adapter == "flux2" || tc.adapter == "qwen_image" {
					kw = map[string]any{}
					if g := string(c.PreparedInputs["guidance"]); g != "null" {
						var j jtensor
						if err := json.Unmarshal(c.PreparedInputs["guidance"], &j); err != nil {
							t.Fatal(err)
						}
						kw["guidance_scale"] = float64(j.Data[0])
					}
					if tc.adapter != "flux" {
						kw["use_guidance_embeds"] = string(c.PreparedInputs["guidance"]) != "null"
					} else if strings.Contains(c.Note, "use_guidance_embeds=False") {
						kw["use_guidance_embeds"] = false
					}
				}
				a, err := CreateAdapter(tc.adapter, kw)
				if err != nil {
					t.Fatal(err)
				}
				ctx := adapterContext(t, &c)
				rng := ctx.RNG.(*replayRNG)
				in, err := a.PrepareInputs(ctx)
				if err != nil {
					t.Fatal(err)
				}
				rng.check(t)
				compareInputs(t, "prepared_inputs", in, c.PreparedInputs, 0, 0)
				if c.ModelCall == nil {
					return
				}
				m := tc.model()
				pred, outs, err := a.Forward(context.Background(), m, in)
				if err != nil {
					t.Fatal(err)
				}
				rec := m.(interface{ rec() callRecord }).rec()
				rec.check(t, c.ModelCall)
				compareTensor(t, "prediction", pred, c.Prediction.tensor(t), 0, 0)
				if got := slices.Sorted(mapKeys(in)); !slices.Equal(got, slices.Sorted(slices.Values(c.InputsAfterForwardKeys))) {
					t.Errorf("inputs after forward = %v, want %v", got, c.InputsAfterForwardKeys)
				}
				al, isAux := a.(AuxLosser)
				if (c.AuxiliaryLosses != nil) != isAux {
					t.Fatalf("auxiliary losses %v, adapter implements AuxLosser: %v", c.AuxiliaryLosses, isAux)
				}
				if isAux {
					aux, err := al.AuxiliaryLosses(in)
					if err != nil {
						t.Fatal(err)
					}
					if len(aux) != len(c.AuxiliaryLosses) {
						t.Fatalf("aux = %v, want %v", aux, c.AuxiliaryLosses)
					}
					for _, x := range aux {
						compareF32(t, "aux "+x.Name, []float32{x.Value}, []float32{float32(c.AuxiliaryLosses[x.Name])}, 2, 5e-7)
					}
				}
				checkOutputGradIsAdjoint(t, a, in, outs, pred)
				if c.ComputeLoss != nil {
					loss, err := mseLoss(c.ComputeLoss.ModelPred.tensor(t), c.ComputeLoss.Target.tensor(t))
					if err != nil {
						t.Fatal(err)
					}
					compareTensor(t, "compute_loss", loss, c.ComputeLoss.Loss.tensor(t), 0, 0)
					bad := c.ComputeLoss.ModelPred.tensor(t)
					bad.Shape = []int{bad.Numel()}
					if _, err := mseLoss(bad, c.ComputeLoss.Target.tensor(t)); err == nil {
						t.Error("mseLoss accepted mismatched shapes")
					}
				}
			})
		}
		if f.MissingKeyError != "" {
			t.Run(tc.adapter+"/missing_key", func(t *testing.T) {
				c := f.Cases[0]
				a, _ := CreateAdapter(tc.adapter, c.AdapterKwargs)
				ctx := adapterContext(t, &c)
				delete(ctx.Batch, "audio_latents")
				_, err := a.PrepareInputs(ctx)
				want := strings.Trim(f.MissingKeyError, `"`)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v, want it to contain %q", err, want)
				}
			})
		}
	}
}

func (m *arangeModel) rec() callRecord         { return m.record }
func (m filteringArangeModel) rec() callRecord { return m.record }
func mapKeys(in Inputs) func(func(string) bool) {
	return func(y func(string) bool) {
		for k := range in {
			if !y(k) {
				return
			}
		}
	}
}

func adapterContext(t *testing.T, c *adapterCase) *Context {
	t.Helper()
	d, err := ParseDType(c.Context.DType)
	if err != nil {
		t.Fatal(err)
	}
	return &Context{
		NoisyLatents:   c.Context.NoisyLatents.tensor(t),
		Latents:        c.Context.Latents.tensor(t),
		Timesteps:      c.Context.Timesteps.tensor(t).Data,
		Sigma:          c.Context.Sigma.tensor(t).Data,
		TaskType:       c.Context.TaskType,
		DataType:       c.Context.DataType,
		DType:          d,
		Batch:          parseBatch(t, c.Context.Batch),
		CFGDropoutProb: c.Context.CFGDropoutProb,
		RNG:            newReplay(c.RNGCalls),
	}
}

// checkOutputGradIsAdjoint checks the training contract's re-layout: for a
// random dPred, Σ dPred·pred must equal Σ_k dOut_k·out_k over the parts of
// the outputs the prediction reads — i.e. ModelOutputGrad is the adjoint
// (transpose) of the unpacking. The prediction is a pure permutation of
// output elements, so with outputs holding distinct values this pins the
// layout exactly. Audio gradients (LTX-2) are checked separately.
func checkOutputGradIsAdjoint(t *testing.T, a ModelAdapter, in Inputs, outs []*Tensor, pred *Tensor) {
	t.Helper()
	og, ok := a.(OutputGrad)
	if !ok {
		t.Fatalf("%T does not implement OutputGrad", a)
	}
	g := NewRNG(1, 0)
	dPred := FromFloat32(Float32, g.Randn(pred.Numel()), pred.Shape...)
	d, err := og.ModelOutputGrad(in, outs, dPred)
	if err != nil {
		t.Fatal(err)
	}
	if len(d) != len(outs) || d[0] == nil || !slices.Equal(d[0].Shape, outs[0].Shape) {
		t.Fatalf("output gradient %v for outputs %v", d, outs)
	}
	var lhs, rhs float64
	for i, v := range dPred.Data {
		lhs += float64(v) * float64(pred.Data[i])
	}
	for i, v := range d[0].Data {
		rhs += float64(v) * float64(outs[0].Data[i])
	}
	if math.Abs(lhs-rhs) > 1e-9*math.Max(1, math.Abs(lhs)) {
		t.Errorf("<dPred, pred> = %v but <dOut, out> = %v: output gradient is not the adjoint of the unpacking", lhs, rhs)
	}
}
