package jobspec

// DiTConfig is the FM-DiT configuration under model:. It mirrors
// model.Config's keys and is swapped for model.Config itself once that
// package lands, without changing the YAML.
type DiTConfig struct {
	InChannels  int     `yaml:"in_channels"`
	OutChannels int     `yaml:"out_channels"`
	PatchSize   int     `yaml:"patch_size"`
	PatchSizeT  int     `yaml:"patch_size_t"`
	HiddenSize  int     `yaml:"hidden_size"`
	Depth       int     `yaml:"depth"`
	NumHeads    int     `yaml:"num_heads"`
	MLPRatio    float64 `yaml:"mlp_ratio"`
	TextDim     int     `yaml:"text_dim"`
}

// IsZero reports whether no config field is set.
func (c DiTConfig) IsZero() bool { return c == DiTConfig{} }

// FlowMatching is NeMo's flow_matching: section. It mirrors flow.Config's
// keys and is swapped for flow.Config itself once that package lands,
// without changing the YAML.
type FlowMatching struct {
	AdapterType         string         `yaml:"adapter_type"`
	AdapterKwargs       map[string]any `yaml:"adapter_kwargs"`
	NumTrainTimesteps   int            `yaml:"num_train_timesteps"`
	TimestepSampling    string         `yaml:"timestep_sampling"`
	FlowShift           float64        `yaml:"flow_shift"`
	I2VProb             float64        `yaml:"i2v_prob"`
	CFGDropoutProb      float64        `yaml:"cfg_dropout_prob"`
	LogitMean           float64        `yaml:"logit_mean"`
	LogitStd            float64        `yaml:"logit_std"`
	MixUniformRatio     float64        `yaml:"mix_uniform_ratio"`
	BetaAlpha           float64        `yaml:"beta_alpha"`
	BetaBeta            float64        `yaml:"beta_beta"`
	UseSigmaNoise       bool           `yaml:"use_sigma_noise"`
	SigmaMin            float64        `yaml:"sigma_min"`
	SigmaMax            float64        `yaml:"sigma_max"`
	UseLossWeighting    bool           `yaml:"use_loss_weighting"`
	LossWeightingScheme string         `yaml:"loss_weighting_scheme"`
	LogInterval         int            `yaml:"log_interval"`
	SummaryLogInterval  int            `yaml:"summary_log_interval"`
	ApplyLossMask       bool           `yaml:"apply_loss_mask"`
	DebugLogging        bool           `yaml:"debug_logging"`
}

// defaultFlowMatching is NeMo's FlowMatchingPipeline defaults.
func defaultFlowMatching() FlowMatching {
	return FlowMatching{
		AdapterType:         "simple",
		NumTrainTimesteps:   1000,
		TimestepSampling:    "logit_normal",
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
		LossWeightingScheme: "linear",
		LogInterval:         100,
		SummaryLogInterval:  10,
	}
}
