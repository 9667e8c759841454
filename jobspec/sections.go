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
