package flow

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

type signatureParam struct {
	Name     string          `json:"name"`
	Required bool            `json:"required"`
	Default  json.RawMessage `json:"default"`
}

func TestSignatureVectors(t *testing.T) {
	var f map[string]json.RawMessage
	loadVectors(t, "signatures.json", &f)
	dec := func(key string, v any) {
		t.Helper()
		if err := json.Unmarshal(f[key], v); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}

	// Every NeMo constructor default is DefaultConfig's value under the same name.
	var params []signatureParam
	dec("FlowMatchingPipeline.__init__", &params)
	defaults, err := json.Marshal(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var ours map[string]any
	if err := json.Unmarshal(defaults, &ours); err != nil {
		t.Fatal(err)
	}
	for _, p := range params {
		if p.Name == "model_adapter" || p.Name == "device" { // an object, and torch's device
			continue
		}
		var want any
		if err := json.Unmarshal(p.Default, &want); err != nil {
			t.Fatal(err)
		}
		if got, ok := ours[p.Name]; !ok || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("default %s = %v, NeMo's is %v", p.Name, got, want)
		}
	}

	// Registry order and NeMo's unknown-adapter message.
	var names []string
	dec("create_adapter_names", &names)
	if got := AdapterNames(); !slices.Equal(got, names) {
		t.Errorf("AdapterNames() = %v, want %v", got, names)
	}
	var msg string
	dec("create_adapter_error_message", &msg)
	if _, err := CreateAdapter("__nope__", nil); err == nil || !strings.Contains(err.Error(), msg) {
		t.Errorf("CreateAdapter(__nope__) error %v, want it to contain %q", err, msg)
	}

	// Adapter constructor defaults.
	for key, check := range map[string]func(ModelAdapter) map[string]any{
		"HunyuanAdapter.__init__": func(a ModelAdapter) map[string]any {
			h := a.(*HunyuanAdapter)
			return map[string]any{"default_image_embed_shape": []any{float64(h.DefaultImageEmbedShape[0]), float64(h.DefaultImageEmbedShape[1])}, "use_condition_latents": h.UseConditionLatents}
		},
		"FluxAdapter.__init__": func(a ModelAdapter) map[string]any {
			x := a.(*FluxAdapter)
			return map[string]any{"guidance_scale": x.GuidanceScale, "use_guidance_embeds": x.UseGuidanceEmbeds}
		},
		"Flux2Adapter.__init__": func(a ModelAdapter) map[string]any {
			x := a.(*Flux2Adapter)
			return map[string]any{"guidance_scale": x.GuidanceScale, "use_guidance_embeds": x.UseGuidanceEmbeds}
		},
		"QwenImageAdapter.__init__": func(a ModelAdapter) map[string]any {
			x := a.(*QwenImageAdapter)
			return map[string]any{"guidance_scale": x.GuidanceScale, "use_guidance_embeds": x.UseGuidanceEmbeds}
		},
		"LTX2Adapter.__init__": func(a ModelAdapter) map[string]any {
			x := a.(*LTX2Adapter)
			return map[string]any{"audio_loss_weight": x.AudioLossWeight, "fps": x.FPS}
		},
	} {
		name := map[string]string{"HunyuanAdapter.__init__": "hunyuan", "FluxAdapter.__init__": "flux", "Flux2Adapter.__init__": "flux2",
			"QwenImageAdapter.__init__": "qwen_image", "LTX2Adapter.__init__": "ltx2"}[key]
		a, err := CreateAdapter(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := check(a)
		dec(key, &params)
		for _, p := range params {
			var want any
			_ = json.Unmarshal(p.Default, &want)
			if fmt.Sprint(got[p.Name]) != fmt.Sprint(want) {
				t.Errorf("%s default %s = %v, want %v", name, p.Name, got[p.Name], want)
			}
		}
	}

	// NeMo's constructor errors, with NeMo's messages.
	var validation []struct {
		Kwargs  map[string]any `json:"kwargs"`
		Message string         `json:"message"`
	}
	dec("constructor_validation", &validation)
	if len(validation) == 0 {
		t.Fatal("no constructor_validation cases")
	}
	for _, v := range validation {
		cfg := configFromKwargs(t, v.Kwargs)
		if _, err := New(cfg, SimpleAdapter{}, Options{}); err == nil || !strings.Contains(err.Error(), v.Message) {
			t.Errorf("New(%v) error %v, want it to contain %q", v.Kwargs, err, v.Message)
		}
	}
	var hasTable bool
	dec("default_pipeline_has_bsmntw_table", &hasTable)
	p, err := New(DefaultConfig(), SimpleAdapter{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if (p.bsmntw != nil) != hasTable {
		t.Errorf("default pipeline has bsmntw table: %v, want %v", p.bsmntw != nil, hasTable)
	}
	// The remaining records (sample_timesteps, compute_loss, step, create_pipeline,
	// context fields) are method signatures: check the parameter names we mirror.
	var stepParams []signatureParam
	dec("FlowMatchingPipeline.step", &stepParams)
	var got []string
	for _, p := range stepParams {
		got = append(got, p.Name)
	}
	if want := []string{"model", "batch", "device", "dtype", "global_step", "collect_metrics", "check_loss"}; !slices.Equal(got, want) {
		t.Errorf("step parameters %v changed from %v: revisit StepOptions", got, want)
	}
	var ctxFields []signatureParam
	dec("FlowMatchingContext fields", &ctxFields)
	if len(ctxFields) != 10 {
		t.Errorf("FlowMatchingContext has %d fields, Context mirrors 10", len(ctxFields))
	}
}

func TestConfigValidateFmtrainErrors(t *testing.T) {
	for _, c := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.TimestepSampling = "logit-normal" }, `timestep_sampling "logit-normal" is not a known sampler`},
		{func(c *Config) { c.LossWeightingScheme = "cosine" }, `Unknown loss_weighting_scheme: 'cosine'`},
		{func(c *Config) { c.BetaBeta = 0 }, "beta_alpha and beta_beta must both be positive"},
		{func(c *Config) { c.LogInterval = 0 }, "log_interval must not be 0"},
		{func(c *Config) { c.SummaryLogInterval = 0 }, "summary_log_interval must not be 0"},
		{func(c *Config) { c.FlowShift = 0 }, "flow_shift (0) must be > 0"},
		{func(c *Config) { c.FlowShift = -1 }, "flow_shift (-1) must be > 0"},
		{func(c *Config) { c.SigmaMin, c.SigmaMax = 0.9, 0.1 }, "sigma_min (0.9) cannot be greater than sigma_max (0.1)"},
		{func(c *Config) { c.NumTrainTimesteps = 1 }, "num_train_timesteps (1) must be at least 2"},
		{func(c *Config) { c.LogitStd = -1 }, "logit_std (-1) must be >= 0"},
		{func(c *Config) { c.AdapterType = "wan" }, "Unknown adapter type: wan"},
	} {
		cfg := DefaultConfig()
		c.mutate(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, c.want)
		}
		if _, err := New(cfg, SimpleAdapter{}, Options{}); err == nil {
			t.Errorf("New accepted a config Validate rejects (%q)", c.want)
		}
	}
	// Values NeMo accepts with a defined result stay accepted.
	cfg := DefaultConfig()
	cfg.I2VProb, cfg.CFGDropoutProb, cfg.MixUniformRatio, cfg.SigmaMin, cfg.SigmaMax, cfg.LogInterval = 1.5, -0.1, 2, 0.3, 0.3, -7
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate() = %v for values NeMo accepts", err)
	}
	d := DefaultConfig()
	if err := d.Validate(); err != nil {
		t.Errorf("DefaultConfig invalid: %v", err)
	}
}

func TestParseConfigYAML(t *testing.T) {
	cfg, err := ParseConfig([]byte("timestep_sampling: mode\nflow_shift: 5\nuse_loss_weighting: false\nadapter_type: flux\nadapter_kwargs:\n  guidance_scale: 1\napply_loss_mask: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.TimestepSampling, want.FlowShift, want.UseLossWeighting, want.AdapterType, want.ApplyLossMask = "mode", 5, false, "flux", true
	want.AdapterKwargs = map[string]any{"guidance_scale": 1}
	if fmt.Sprint(cfg) != fmt.Sprint(want) {
		t.Errorf("ParseConfig = %+v\nwant %+v", cfg, want)
	}
	if p, err := CreatePipeline(cfg, Options{}); err != nil || p.Adapter().(*FluxAdapter).GuidanceScale != 1 {
		t.Errorf("CreatePipeline: %v", err)
	}
	if _, err := ParseConfig([]byte("flow_shfit: 3\n")); err == nil || !strings.Contains(err.Error(), `unknown key "flow_shfit"`) {
		t.Errorf("typo: err %v", err)
	}
	if _, err := ParseConfig([]byte("flow_shift: -2\n")); err == nil || !strings.Contains(err.Error(), "flow_shift (-2)") {
		t.Errorf("invalid value: err %v", err)
	}
	if _, err := ParseConfig([]byte("flow_shift: abc\n")); err == nil {
		t.Error("non-number flow_shift accepted")
	}
	var fromJSON Config
	if err := json.Unmarshal([]byte(`{"flow_shift": 5}`), &fromJSON); err != nil || fromJSON.FlowShift != 5 || fromJSON.NumTrainTimesteps != 1000 {
		t.Errorf("JSON on top of defaults: %+v, %v", fromJSON, err)
	}
	if err := json.Unmarshal([]byte(`{"flow_shfit": 5}`), &fromJSON); err == nil || !strings.Contains(err.Error(), "flow_shfit") {
		t.Errorf("unknown JSON key: %v", err)
	}
	job := []byte("name: wan\nmodel:\n  hidden_size: 64\nflow_matching:\n  timestep_sampling: uniform\n  sigma_min: 0.875\nseed: 3\n")
	cfg, err = ConfigFromJobYAML(job)
	if err != nil || cfg.TimestepSampling != "uniform" || cfg.SigmaMin != 0.875 || cfg.FlowShift != 3 {
		t.Errorf("ConfigFromJobYAML = %+v, %v", cfg, err)
	}
	if cfg, err = ConfigFromJobYAML([]byte("name: x\n")); err != nil || fmt.Sprint(cfg) != fmt.Sprint(DefaultConfig()) {
		t.Errorf("job without flow_matching: %+v, %v", cfg, err)
	}
	if _, err := CreatePipeline(Config{AdapterType: "flux", AdapterKwargs: map[string]any{"guidance": 2}}, Options{}); err == nil || !strings.Contains(err.Error(), "guidance") {
		t.Errorf("unknown adapter kwarg: err %v", err)
	}
}
