package core

import (
	"fmt"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
)

// testSpec is a valid job spec with the fields the coordinator decides on.
func testSpec(name string, minW, maxW, global, local, maxSteps int, device string) string {
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

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func worker(id string) api.RegisterRequest {
	return api.RegisterRequest{WorkerID: id, Host: "h", Device: "cpu", CollectiveAddr: id + ":7100"}
}

func stopped(w, job string, gen uint64, sec int) MemberStopped {
	return MemberStopped{JobID: job, Generation: gen, WorkerID: w, At: at(sec)}
}
