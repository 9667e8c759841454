package flow

import (
	"encoding/json"
	"strings"
	"testing"
)

// configFromKwargs applies NeMo pipeline kwargs (JSON) on top of the defaults
// without validating, so deliberately invalid vectors can be replayed.
func configFromKwargs(t *testing.T, kw map[string]any) Config {
	t.Helper()
	cfg := DefaultConfig()
	data, err := json.Marshal(kw)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("pipeline kwargs %s: %v", data, err)
	}
	return cfg
}

func TestFlowShiftVectors(t *testing.T) {
	var f struct {
		Mismatches int `json:"float32_emulation_mismatches"`
		Cases      []struct {
			UseSigmaNoise     bool      `json:"use_sigma_noise"`
			TimestepSampling  string    `json:"timestep_sampling"`
			FlowShift         float64   `json:"flow_shift"`
			SigmaMin          float64   `json:"sigma_min"`
			SigmaMax          float64   `json:"sigma_max"`
			NumTrainTimesteps int       `json:"num_train_timesteps"`
			RNGCalls          []rngCall `json:"rng_calls"`
			U                 []jnum    `json:"u"`
			Sigma             []jnum    `json:"sigma"`
			Timesteps         []jnum    `json:"timesteps"`
			SamplingMethod    string    `json:"sampling_method"`
		} `json:"cases"`
	}
	loadVectors(t, "flow_shift.json", &f)
	if len(f.Cases) == 0 || f.Mismatches != 0 {
		t.Fatalf("flow_shift.json: %d cases, %d emulation mismatches", len(f.Cases), f.Mismatches)
	}
	for i, c := range f.Cases {
		cfg := DefaultConfig()
		cfg.UseSigmaNoise, cfg.TimestepSampling, cfg.FlowShift = c.UseSigmaNoise, c.TimestepSampling, c.FlowShift
		cfg.SigmaMin, cfg.SigmaMax, cfg.NumTrainTimesteps = c.SigmaMin, c.SigmaMax, c.NumTrainTimesteps
		rng := newReplay(c.RNGCalls)
		sigma, ts, method := sampleTimesteps(&cfg, rng, len(c.U))
		rng.check(t)
		name := func(what string) string {
			return strings.Join([]string{what, c.SamplingMethod}, "/") + " case " + itoa(i) + " shift " + ftoa(c.FlowShift) + " clamp [" + ftoa(c.SigmaMin) + "," + ftoa(c.SigmaMax) + "] T " + itoa(c.NumTrainTimesteps)
		}
		compareF32(t, name("sigma"), sigma, f32s(c.Sigma), 0, 0)
		compareF32(t, name("timesteps"), ts, f32s(c.Timesteps), 0, 0)
		if method != c.SamplingMethod {
			t.Errorf("%s: method %q, want %q", name("method"), method, c.SamplingMethod)
		}
		// FlowShift alone, on the injected u, before the clamp, is the same map.
		if c.UseSigmaNoise && c.SigmaMin == 0 && c.SigmaMax == 1 {
			for k, u := range f32s(c.U) {
				if got, want := FlowShift(u, float32(c.FlowShift)), float32(c.Sigma[k]); got != want {
					t.Errorf("FlowShift(%v, %v) = %v, want %v", u, c.FlowShift, got, want)
				}
			}
		}
	}
}

func TestSamplerTransformVectors(t *testing.T) {
	var f struct {
		Cases []struct {
			Description    string         `json:"description"`
			PipelineKwargs map[string]any `json:"pipeline_kwargs"`
			BatchSize      int            `json:"batch_size"`
			RNGCalls       []rngCall      `json:"rng_calls"`
			Sigma          []jnum         `json:"sigma"`
			Timesteps      []jnum         `json:"timesteps"`
			SamplingMethod string         `json:"sampling_method"`
		} `json:"cases"`
	}
	loadVectors(t, "sampler_transforms.json", &f)
	if len(f.Cases) < 17 {
		t.Fatalf("sampler_transforms.json: %d cases", len(f.Cases))
	}
	for _, c := range f.Cases {
		t.Run(c.Description, func(t *testing.T) {
			cfg := configFromKwargs(t, c.PipelineKwargs)
			rng := newReplay(c.RNGCalls)
			sigma, ts, method := sampleTimesteps(&cfg, rng, c.BatchSize)
			rng.check(t)
			// Exact for uniform, beta and no-shift; ≤2 ulp or 5e-7 through
			// sigmoid and cos (spec §13). Timesteps inherit σ's tolerance ×T.
			ulps, atol := int64(0), 0.0
			if method != SamplingUniform && method != SamplingBeta && method != SamplingUniformNoShift && method != "foo" {
				ulps, atol = 2, 5e-7
			}
			compareF32(t, "sigma", sigma, f32s(c.Sigma), ulps, atol)
			compareF32(t, "timesteps", ts, f32s(c.Timesteps), ulps, atol*float64(cfg.NumTrainTimesteps))
			if method != c.SamplingMethod {
				t.Errorf("method %q, want %q", method, c.SamplingMethod)
			}
			// An unknown method is NeMo's silent uniform; fmtrain's Validate refuses it.
			if c.SamplingMethod == "foo" {
				if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `timestep_sampling "foo"`) {
					t.Errorf("Validate() = %v, want an error naming timestep_sampling \"foo\"", err)
				}
			}
		})
	}
}

func TestTaskTypeVectors(t *testing.T) {
	var f struct {
		Cases []struct {
			DataType string    `json:"data_type"`
			I2VProb  float64   `json:"i2v_prob"`
			RNGCalls []rngCall `json:"rng_calls"`
			TaskType string    `json:"task_type"`
		} `json:"cases"`
	}
	loadVectors(t, "task_type.json", &f)
	if len(f.Cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range f.Cases {
		rng := newReplay(c.RNGCalls)
		if got := DetermineTaskType(rng, c.DataType, c.I2VProb); got != c.TaskType {
			t.Errorf("DetermineTaskType(%q, %v) = %q, want %q", c.DataType, c.I2VProb, got, c.TaskType)
		}
		rng.check(t)
	}
}

func TestDTypeRoundingVectors(t *testing.T) {
	var f map[string]json.RawMessage
	loadVectors(t, "dtype_rounding.json", &f)
	get := func(key string) *Tensor {
		var j jtensor
		if err := json.Unmarshal(f[key], &j); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		return j.tensor(t)
	}
	ts := get("timesteps_float32").Data
	compareTensor(t, "to_bfloat16", castTimesteps(ts, BFloat16), get("to_bfloat16"), 0, 0)
	compareTensor(t, "to_bfloat16_div_1000", castTimestepsDiv1000(ts, BFloat16), get("to_bfloat16_div_1000 (flux/flux2/qwen timestep)"), 0, 0)
	compareTensor(t, "to_float16_div_1000", castTimestepsDiv1000(ts, Float16), get("to_float16_div_1000"), 0, 0)
	compareTensor(t, "float32_div_1000", castTimestepsDiv1000(ts, Float32), FromFloat32(Float32, divide(ts, 1000), len(ts)), 0, 0)
}

func divide(x []float32, d float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = v / d
	}
	return out
}

func TestRoundBF16Ties(t *testing.T) {
	for _, c := range []struct{ in, want float32 }{
		{1.00390625, 1},              // exactly halfway, even stays
		{1.01171875, 1.015625},       // halfway, odd rounds up
		{537.7, 536},                 // spec §10.1 example
		{999.9, 1000},                // spec §10.1 example
		{-0.0, 0},                    // sign of zero kept by bits
		{3.3895314e38, 3.3895314e38}, // max bf16 stays
	} {
		if got := RoundBF16(c.in); got != c.want {
			t.Errorf("RoundBF16(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if got := RoundF16(70000); got <= 65504 {
		t.Errorf("RoundF16(70000) = %v, want +Inf", got)
	}
	if got := RoundF16(1e-8); got != 0 {
		t.Errorf("RoundF16(1e-8) = %v, want 0 (below half the smallest subnormal)", got)
	}
}
