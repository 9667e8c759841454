package flow

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
)

type stepCase struct {
	Name           string                     `json:"name"`
	AdapterType    string                     `json:"adapter_type"`
	AdapterKwargs  map[string]any             `json:"adapter_kwargs"`
	PipelineKwargs map[string]any             `json:"pipeline_kwargs"`
	StepKwargs     map[string]any             `json:"step_kwargs"`
	Batch          map[string]json.RawMessage `json:"batch"`
	RNGCalls       []rngCall                  `json:"rng_calls"`
	Intermediates  struct {
		Sigma                 *jtensor                   `json:"sigma"`
		Timesteps             *jtensor                   `json:"timesteps"`
		SamplingMethod        string                     `json:"sampling_method"`
		CleanLatentsFloat32   *jtensor                   `json:"clean_latents_float32"`
		Noise                 *jtensor                   `json:"noise"`
		NoisyLatentsFloat32   *jtensor                   `json:"noisy_latents_float32"`
		ContextTaskType       string                     `json:"context_task_type"`
		ContextNoisyLatents   *jtensor                   `json:"context_noisy_latents"`
		PreparedInputs        map[string]json.RawMessage `json:"prepared_inputs"`
		ModelPred             *jtensor                   `json:"model_pred"`
		Target                *jtensor                   `json:"target"`
		UnweightedLoss        *jtensor                   `json:"unweighted_loss"`
		AverageUnweightedLoss jnum                       `json:"average_unweighted_loss"`
		LossWeight            *jtensor                   `json:"loss_weight"`
	} `json:"intermediates"`
	Outputs *struct {
		WeightedLoss        *jtensor       `json:"weighted_loss"`
		AverageWeightedLoss jnum           `json:"average_weighted_loss"`
		LossMask            *jtensor       `json:"loss_mask"`
		Metrics             map[string]any `json:"metrics"`
	} `json:"outputs"`
	Error *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// constLossAdapter is the vectors' test-only SimpleAdapter subclass whose
// compute_loss returns a constant.
type constLossAdapter struct {
	SimpleAdapter
	c float32
}

func (a constLossAdapter) ComputeLoss(pred, _ *Tensor) (*Tensor, error) {
	out := NewTensor(Float32, pred.Shape...)
	for i := range out.Data {
		out.Data[i] = a.c
	}
	return out, nil
}

// meanF32 is a float32 mean of t's sample b (tensor [B,…]).
func sampleMean(t *Tensor, b int) float32 {
	per := t.Numel() / t.Shape[0]
	return mean32(t.Data[b*per : (b+1)*per])
}

func sampleSum(t *Tensor, b int) float32 {
	per := t.Numel() / t.Shape[0]
	var s float64
	for _, v := range t.Data[b*per : (b+1)*per] {
		s += float64(v)
	}
	return float32(s)
}

// stepModel returns the fake model of a step_e2e case (its fake_model formula).
func stepModel(t *testing.T, c *stepCase) (Model, *callRecord) {
	rec := &callRecord{}
	perSample := func(name string, f func(b int, c *ModelCall, x float32) float32) Model {
		return ModelFunc(func(_ context.Context, call *ModelCall) ([]*Tensor, error) {
			*rec = recordCall(call)
			x := call.Tensor(name)
			out := NewTensor(Float32, x.Shape...)
			per := x.Numel() / x.Shape[0]
			for i, v := range x.Data {
				out.Data[i] = f(i/per, call, v)
			}
			return []*Tensor{out}, nil
		})
	}
	switch {
	case strings.HasPrefix(c.Name, "explode_pred_const_"):
		v, err := strconv.ParseFloat(strings.Split(strings.TrimPrefix(c.Name, "explode_pred_const_"), "_")[0], 32)
		if err != nil {
			t.Fatal(err)
		}
		return perSample("hidden_states", func(int, *ModelCall, float32) float32 { return float32(v) }), rec
	case c.AdapterType == "simple":
		// pred[b,o,…] = W[o,0]x[b,0,…] + W[o,1]x[b,1,…] + 0.5·t[b]/1000 + 0.25·mean(text[b])
		W := [2][2]float32{{0.75, -0.5}, {0.25, 1.5}}
		return ModelFunc(func(_ context.Context, call *ModelCall) ([]*Tensor, error) {
			*rec = recordCall(call)
			x, ts, text := call.Tensor("hidden_states"), call.Tensor("timestep"), call.Tensor("encoder_hidden_states")
			out := NewTensor(Float32, x.Shape...)
			B, S := x.Shape[0], x.Numel()/(x.Shape[0]*2)
			for b := range B {
				tb := float32(float32(0.5*ts.Data[b]) / 1000)
				mb := float32(0.25 * sampleMean(text, b))
				for o := range 2 {
					for s := range S {
						acc := float32(0)
						acc = float32(acc + float32(W[o][0]*x.Data[(b*2+0)*S+s]))
						acc = float32(acc + float32(W[o][1]*x.Data[(b*2+1)*S+s]))
						out.Data[(b*2+o)*S+s] = float32(float32(acc+tb) + mb)
					}
				}
			}
			return []*Tensor{out}, nil
		}), rec
	case c.AdapterType == "flux":
		return perSample("hidden_states", func(b int, call *ModelCall, x float32) float32 {
			v := float32(float32(0.5*x) + call.Tensor("timestep").Data[b])
			v = float32(v + float32(0.01*sampleSum(call.Tensor("pooled_projections"), b)))
			return float32(v + float32(0.1*sampleMean(call.Tensor("encoder_hidden_states"), b)))
		}), rec
	case c.AdapterType == "qwen_image":
		return perSample("hidden_states", func(b int, call *ModelCall, x float32) float32 {
			v := float32(float32(0.5*x) + call.Tensor("timestep").Data[b])
			return float32(v + float32(0.1*sampleMean(call.Tensor("encoder_hidden_states"), b)))
		}), rec
	case c.AdapterType == "hunyuan":
		// pred = 0.5·x[:, :C] + 0.25·x[:, C:2C] + 0.001·t[b] + 0.1·mean(text[b])
		return ModelFunc(func(_ context.Context, call *ModelCall) ([]*Tensor, error) {
			*rec = recordCall(call)
			x, ts := call.Args[0].(*Tensor), call.Args[1].(*Tensor)
			B, C := x.Shape[0], (x.Shape[1]-1)/2
			vol := x.Numel() / (B * x.Shape[1])
			out := NewTensor(Float32, append([]int{B, C}, x.Shape[2:]...)...)
			for b := range B {
				tb := float32(0.001 * ts.Data[b])
				mb := float32(0.1 * sampleMean(call.Tensor("encoder_hidden_states"), b))
				for ch := range C {
					for s := range vol {
						v := float32(float32(0.5*x.Data[(b*x.Shape[1]+ch)*vol+s]) + float32(0.25*x.Data[(b*x.Shape[1]+C+ch)*vol+s]))
						out.Data[(b*C+ch)*vol+s] = float32(float32(v+tb) + mb)
					}
				}
			}
			return []*Tensor{out}, nil
		}), rec
	case c.AdapterType == "ltx2":
		// (0.5·hs + t/1000, −0.5·audio_hs + audio_t/1000); no sigma/audio_sigma/fps/audio_num_frames.
		m := ModelFunc(func(_ context.Context, call *ModelCall) ([]*Tensor, error) {
			*rec = recordCall(call)
			f := func(x, ts *Tensor, k float32) *Tensor {
				out := NewTensor(Float32, x.Shape...)
				F := x.Shape[2]
				for i, v := range x.Data {
					out.Data[i] = float32(float32(k*v) + float32(ts.Data[i/F]/1000))
				}
				return out
			}
			return []*Tensor{f(call.Tensor("hidden_states"), call.Tensor("timestep"), 0.5), f(call.Tensor("audio_hidden_states"), call.Tensor("audio_timestep"), -0.5)}, nil
		})
		return kwargFilterModel{m, []string{"sigma", "audio_sigma", "fps", "audio_num_frames"}}, rec
	}
	t.Fatalf("no fake model for case %s", c.Name)
	return nil, nil
}

type kwargFilterModel struct {
	Model
	reject []string
}

func (m kwargFilterModel) AcceptsKwarg(name string) bool { return !slices.Contains(m.reject, name) }

func TestStepVectors(t *testing.T) {
	var f struct {
		Cases []stepCase `json:"cases"`
	}
	loadVectors(t, "step_e2e.json", &f)
	if len(f.Cases) != 14 {
		t.Fatalf("%d cases, want 14", len(f.Cases))
	}
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) { runStepCase(t, &c) })
	}
}

func runStepCase(t *testing.T, c *stepCase) {
	cfg := configFromKwargs(t, c.PipelineKwargs)
	var a ModelAdapter
	if strings.HasPrefix(c.Name, "threshold_const_loss_") {
		v, err := strconv.ParseFloat(strings.TrimPrefix(c.Name, "threshold_const_loss_"), 32)
		if err != nil {
			t.Fatal(err)
		}
		a = constLossAdapter{c: float32(v)}
	} else {
		var err error
		if a, err = CreateAdapter(c.AdapterType, c.AdapterKwargs); err != nil {
			t.Fatal(err)
		}
	}
	rng := newReplay(c.RNGCalls)
	p, err := New(cfg, a, Options{RNG: rng, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var pctx *Context
	var prepared Inputs
	p.onPrepared = func(c *Context, in Inputs) { pctx, prepared = c, in }
	dtype, err := ParseDType(c.StepKwargs["dtype"].(string))
	if err != nil {
		t.Fatal(err)
	}
	opts := StepOptions{
		DType:          dtype,
		GlobalStep:     int(c.StepKwargs["global_step"].(float64)),
		CollectMetrics: c.StepKwargs["collect_metrics"].(bool),
		CheckLoss:      c.StepKwargs["check_loss"].(bool),
	}
	model, rec := stepModel(t, c)
	res, err := p.Step(context.Background(), model, parseBatch(t, c.Batch), opts)
	rng.check(t)

	if c.Error != nil {
		var le *LossExplodedError
		if err == nil || !errors.As(err, &le) || !strings.Contains(err.Error(), c.Error.Message) {
			t.Fatalf("Step error %v, want %s(%q)", err, c.Error.Type, c.Error.Message)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	im := c.Intermediates
	// σ through a sigmoid or cos is within 2 ulp (spec §13); everything
	// downstream of σ inherits that, so those cases compare at 2 ulp.
	ulps, atol := int64(0), 0.0
	if im.SamplingMethod != SamplingUniform && im.SamplingMethod != SamplingUniformNoShift && im.SamplingMethod != SamplingBeta {
		ulps, atol = 2, 5e-7
	}
	compareF32(t, "sigma", res.Sigma, im.Sigma.tensor(t).Data, ulps, atol)
	compareF32(t, "timesteps", res.Timesteps, im.Timesteps.tensor(t).Data, ulps, atol*1000)
	if res.SamplingMethod != im.SamplingMethod || pctx.TaskType != im.ContextTaskType || res.TaskType != im.ContextTaskType {
		t.Errorf("method %q task %q, want %q %q", res.SamplingMethod, res.TaskType, im.SamplingMethod, im.ContextTaskType)
	}
	compareF32(t, "clean_latents_float32", pctx.Latents.Data, im.CleanLatentsFloat32.tensor(t).Data, 0, 0)
	compareF32(t, "noisy_latents_float32", Interpolate(pctx.Latents.Data, im.Noise.tensor(t).Data, res.Sigma), im.NoisyLatentsFloat32.tensor(t).Data, ulps, atol)
	compareTensor(t, "context_noisy_latents", pctx.NoisyLatents, im.ContextNoisyLatents.tensor(t), ulps, atol)
	compareInputs(t, "prepared_inputs", prepared, im.PreparedInputs, max(ulps, 2), max(atol, 5e-7))
	rec.check(t, &modelCallRecord{NPositional: rec.NPositional, KwargNames: expectedKwargs(c, prepared)})
	compareTensor(t, "model_pred", res.Prediction, im.ModelPred.tensor(t), 2, atol)
	compareTensor(t, "target", res.Target, im.Target.tensor(t), 0, 0)
	compareTensor(t, "unweighted_loss", res.Loss.UnweightedLoss, im.UnweightedLoss.tensor(t), 2, atol)
	compareF32(t, "average_unweighted_loss", []float32{res.Loss.AverageUnweightedLoss}, []float32{float32(im.AverageUnweightedLoss)}, 2, 5e-7)
	wAtol := atol
	if cfg.LossWeightingScheme == WeightingBSMNTW {
		wAtol = 1e-6
	}
	compareTensor(t, "loss_weight", res.Loss.LossWeight, im.LossWeight.tensor(t), ulps, wAtol)

	out := c.Outputs
	compareTensor(t, "weighted_loss", res.WeightedLoss, out.WeightedLoss.tensor(t), 2, max(wAtol, 5e-7)*4)
	compareF32(t, "average_weighted_loss", []float32{res.AverageWeightedLoss}, []float32{float32(out.AverageWeightedLoss)}, 2, max(wAtol, 5e-7))
	compareTensor(t, "loss_mask", res.LossMask, out.LossMask.tensor(t), 0, 0)
	if !opts.CollectMetrics {
		if len(out.Metrics) != 0 || res.Metrics != nil {
			t.Errorf("metrics %v, want none", res.Metrics)
		}
		return
	}
	if got, want := slices.Sorted(maps.Keys(res.Metrics)), slices.Sorted(maps.Keys(out.Metrics)); !slices.Equal(got, want) {
		t.Errorf("metric keys %v, want %v", got, want)
	}
	for k, want := range out.Metrics {
		switch w := want.(type) {
		case string:
			if res.Metrics[k] != w {
				t.Errorf("metric %s = %v, want %q", k, res.Metrics[k], w)
			}
		case float64:
			g, ok := res.Metrics[k].(float64)
			tol := max(wAtol, 5e-7)
			if strings.HasPrefix(k, "timestep") {
				tol *= 1000
			}
			if !ok || !closeF32(float32(g), float32(w), 2, tol) {
				t.Errorf("metric %s = %v, want %v", k, res.Metrics[k], w)
			}
		}
	}
}

// expectedKwargs is the keyword set NeMo's adapter passed for this case:
// the public prepared inputs plus return_dict (and attention_kwargs=None
// for qwen_image_edit), minus what the LTX-2 fake model's signature lacks.
func expectedKwargs(c *stepCase, prepared Inputs) []string {
	var names []string
	for k := range prepared {
		if strings.HasPrefix(k, "_") || (c.AdapterType == "hunyuan" && (k == "latents" || k == "timesteps")) {
			continue
		}
		if c.AdapterType == "ltx2" && slices.Contains([]string{"sigma", "audio_sigma", "fps", "audio_num_frames"}, k) {
			continue
		}
		names = append(names, k)
	}
	return append(names, "return_dict")
}
