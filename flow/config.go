package flow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Sampling methods (Config.TimestepSampling). NeMo's sampler names, verbatim.
const (
	SamplingUniform     = "uniform"
	SamplingLogitNormal = "logit_normal"
	SamplingLognorm     = "lognorm"
	SamplingMix         = "mix"
	SamplingMode        = "mode"
	SamplingBeta        = "beta"
	// SamplingUniformNoShift is the method Step reports when
	// UseSigmaNoise is false; it cannot be configured directly.
	SamplingUniformNoShift = "uniform_no_shift"
)

// Loss weighting schemes (Config.LossWeightingScheme).
const (
	WeightingLinear = "linear"
	WeightingBSMNTW = "bsmntw"
)

// Config is NeMo AutoModel's FlowMatchingPipeline constructor, field for
// field, under the YAML keys of a recipe's `flow_matching:` section, plus
// fmtrain's own switches (ApplyLossMask, DebugLogging). Start from
// DefaultConfig: its values are NeMo's defaults. Decoding YAML into a Config
// starts from DefaultConfig too, so absent keys keep NeMo's defaults, and an
// unknown key is an error naming it. docs/flow.md explains every field.
type Config struct {
	NumTrainTimesteps   int     `yaml:"num_train_timesteps" json:"num_train_timesteps"`
	TimestepSampling    string  `yaml:"timestep_sampling" json:"timestep_sampling"`
	FlowShift           float64 `yaml:"flow_shift" json:"flow_shift"`
	I2VProb             float64 `yaml:"i2v_prob" json:"i2v_prob"`
	CFGDropoutProb      float64 `yaml:"cfg_dropout_prob" json:"cfg_dropout_prob"`
	LogitMean           float64 `yaml:"logit_mean" json:"logit_mean"`
	LogitStd            float64 `yaml:"logit_std" json:"logit_std"`
	MixUniformRatio     float64 `yaml:"mix_uniform_ratio" json:"mix_uniform_ratio"`
	BetaAlpha           float64 `yaml:"beta_alpha" json:"beta_alpha"`
	BetaBeta            float64 `yaml:"beta_beta" json:"beta_beta"`
	UseSigmaNoise       bool    `yaml:"use_sigma_noise" json:"use_sigma_noise"`
	SigmaMin            float64 `yaml:"sigma_min" json:"sigma_min"`
	SigmaMax            float64 `yaml:"sigma_max" json:"sigma_max"`
	UseLossWeighting    bool    `yaml:"use_loss_weighting" json:"use_loss_weighting"`
	LossWeightingScheme string  `yaml:"loss_weighting_scheme" json:"loss_weighting_scheme"`
	LogInterval         int     `yaml:"log_interval" json:"log_interval"`
	SummaryLogInterval  int     `yaml:"summary_log_interval" json:"summary_log_interval"`

	// AdapterType names the model adapter (CreateAdapter); NeMo's recipe
	// default is "simple".
	AdapterType string `yaml:"adapter_type" json:"adapter_type"`
	// AdapterKwargs are the adapter's constructor arguments.
	AdapterKwargs map[string]any `yaml:"adapter_kwargs" json:"adapter_kwargs,omitempty"`

	// ApplyLossMask (fmtrain only; default false = NeMo's numbers) makes the
	// scalar loss the mean over elements where the batch's "loss_mask" is
	// non-zero (mask-weighted), instead of the mean over all elements.
	ApplyLossMask bool `yaml:"apply_loss_mask" json:"apply_loss_mask"`
	// DebugLogging (fmtrain only) switches on NeMo's debug log blocks, as the
	// environment variable DEBUG_TRAINING=1 also does.
	DebugLogging bool `yaml:"debug_logging" json:"debug_logging"`
}

// DefaultConfig returns NeMo's constructor defaults (and the recipe's
// adapter_type default "simple").
func DefaultConfig() Config {
	return Config{
		NumTrainTimesteps:   1000,
		TimestepSampling:    SamplingLogitNormal,
		FlowShift:           3.0,
		I2VProb:             0.3,
		CFGDropoutProb:      0.1,
		LogitMean:           0.0,
		LogitStd:            1.0,
		MixUniformRatio:     0.1,
		BetaAlpha:           2.5,
		BetaBeta:            1.5,
		UseSigmaNoise:       true,
		SigmaMin:            0.0,
		SigmaMax:            1.0,
		UseLossWeighting:    true,
		LossWeightingScheme: WeightingLinear,
		LogInterval:         100,
		SummaryLogInterval:  10,
		AdapterType:         "simple",
	}
}

// SamplingMethods lists the accepted TimestepSampling values.
var SamplingMethods = []string{SamplingUniform, SamplingLogitNormal, SamplingLognorm, SamplingMix, SamplingMode, SamplingBeta}

// Validate returns every problem with c, joined, each naming the YAML key and
// value. It rejects what NeMo rejects (with NeMo's messages) and, unlike
// NeMo, values that would silently train on something else or crash
// mid-run: an unknown sampler, flow_shift <= 0, sigma_min > sigma_max,
// num_train_timesteps < 2, log intervals of 0 and a negative logit_std.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("flow: "+format, args...)) }
	if !slices.Contains(SamplingMethods, c.TimestepSampling) {
		bad("timestep_sampling %q is not a known sampler (want one of %s)", c.TimestepSampling, strings.Join(SamplingMethods, ", "))
	}
	if c.LossWeightingScheme != WeightingLinear && c.LossWeightingScheme != WeightingBSMNTW {
		bad("loss_weighting_scheme: Unknown loss_weighting_scheme: '%s'. Must be one of ('linear', 'bsmntw')", c.LossWeightingScheme)
	}
	if !(c.BetaAlpha > 0) || !(c.BetaBeta > 0) {
		bad("beta_alpha (%v), beta_beta (%v): beta_alpha and beta_beta must both be positive", c.BetaAlpha, c.BetaBeta)
	}
	if !(c.FlowShift > 0) {
		bad("flow_shift (%v) must be > 0", c.FlowShift)
	}
	if c.SigmaMin > c.SigmaMax {
		bad("sigma_min (%v) cannot be greater than sigma_max (%v)", c.SigmaMin, c.SigmaMax)
	}
	if c.NumTrainTimesteps < 2 {
		bad("num_train_timesteps (%d) must be at least 2", c.NumTrainTimesteps)
	}
	if c.LogInterval == 0 {
		bad("log_interval must not be 0 (NeMo divides the step by it)")
	}
	if c.SummaryLogInterval == 0 {
		bad("summary_log_interval must not be 0 (NeMo divides the step by it)")
	}
	if c.LogitStd < 0 {
		bad("logit_std (%v) must be >= 0", c.LogitStd)
	}
	if c.AdapterType != "" && !slices.Contains(AdapterNames(), c.AdapterType) {
		bad("adapter_type: %v", unknownAdapterError(c.AdapterType))
	}
	return errors.Join(errs...)
}

// configKeys are the YAML keys Config accepts, in declaration order.
var configKeys = func() []string {
	var keys []string
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		keys = append(keys, strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0])
	}
	return keys
}()

// UnmarshalYAML decodes a `flow_matching:` mapping on top of DefaultConfig,
// rejecting unknown keys (whatever the decoder's own strictness).
func (c *Config) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("flow: flow_matching (line %d) must be a mapping", n.Line)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !slices.Contains(configKeys, k.Value) {
			known := slices.Clone(configKeys)
			sort.Strings(known)
			return fmt.Errorf("flow: flow_matching: unknown key %q (line %d); known keys: %s", k.Value, k.Line, strings.Join(known, ", "))
		}
	}
	type plain Config
	p := plain(DefaultConfig())
	if err := n.Decode(&p); err != nil {
		return fmt.Errorf("flow: flow_matching: %w", err)
	}
	*c = Config(p)
	return nil
}

// UnmarshalJSON decodes a JSON object on top of DefaultConfig (absent keys
// keep NeMo's defaults), rejecting unknown keys.
func (c *Config) UnmarshalJSON(data []byte) error {
	type plain Config
	p := plain(DefaultConfig())
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("flow: flow_matching: %w", err)
	}
	*c = Config(p)
	return nil
}

// ParseConfig decodes a `flow_matching:` mapping (the section's body, not
// the whole job file) and validates it.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	if len(bytes.TrimSpace(data)) == 0 {
		return cfg, cfg.Validate()
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return Config{}, err
	}
	return cfg, cfg.Validate()
}

// ConfigFromJobYAML reads the `flow_matching:` section of a job (or NeMo
// recipe) YAML file, ignoring every other section, and validates it. A file
// without the section yields DefaultConfig.
func ConfigFromJobYAML(data []byte) (Config, error) {
	var doc struct {
		FlowMatching yaml.Node `yaml:"flow_matching"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, fmt.Errorf("flow: reading job YAML: %w", err)
	}
	cfg := DefaultConfig()
	n := &doc.FlowMatching
	if n.Kind != 0 && !(n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		if err := n.Decode(&cfg); err != nil {
			return Config{}, err
		}
	}
	return cfg, cfg.Validate()
}
