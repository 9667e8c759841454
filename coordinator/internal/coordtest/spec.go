// Package coordtest holds fixtures shared by the coordinator's tests (the
// raft node's in coordinator and the state machine's in coordinator/core).
package coordtest

import "fmt"

// JobSpec is a valid job spec with the fields the coordinator decides on:
// membership bounds, batch sizes, step count and device.
func JobSpec(name, device string, minW, maxW, global, local, maxSteps int) string {
	return fmt.Sprintf(`name: %s
seed: 1
device: %s
min_workers: %d
max_workers: %d
model:
  in_channels: 3
  out_channels: 3
  patch_size: 2
  patch_size_t: 1
  hidden_size: 32
  depth: 1
  num_heads: 2
  mlp_ratio: 4
  text_dim: 8
flow_matching:
  adapter_type: simple
data:
  manifest: data/manifest.json
optimizer:
  lr: 1.0e-3
step_scheduler:
  global_batch_size: %d
  local_batch_size: %d
  max_steps: %d
  ckpt_every_steps: 10
`, name, device, minW, maxW, global, local, maxSteps)
}
