// Package flow is fmtrain's port of NeMo AutoModel's FlowMatchingPipeline and
// its model adapters (flow-pipeline.md is the specification): timestep
// sampling, flow shift, σ clamps, interpolation, loss weighting (linear,
// bsmntw), task type, metrics, the loss-explosion check, and the seven
// adapters simple, hunyuan, flux, flux2, qwen_image, qwen_image_edit and
// ltx2. It knows no concrete model, no network and no device.
//
// Every random draw goes through the RNG interface, in the order NeMo makes
// them, so tests replay NeMo's recorded draws and production uses a seeded
// per-rank Generator whose state is checkpointed.
//
// Driving loop (what a trainer does per micro-batch):
//
//	cfg := flow.DefaultConfig()              // or decoded from a job's flow_matching: section
//	rng := flow.NewRNG(seed, rank)
//	p, err := flow.CreatePipeline(cfg, flow.Options{RNG: rng, Logger: log})
//	opts := flow.StepOptions{DType: flow.Float32, GlobalStep: step, CheckLoss: true}
//	res, err := p.Step(ctx, model, batch, opts) // model implements flow.Model
//	// res.AverageWeightedLoss is the scalar loss NeMo backpropagates;
//	// res.DModelOutputs[0] is d(loss)/d(model output [0]) in the model's
//	// output layout: feed it to the model's explicit backward.
//	state, _ := rng.MarshalBinary()          // into the checkpoint
//
// Training contract: for adapters implementing OutputGrad (all seven) and
// the default MSE loss, Step returns the gradient of AverageWeightedLoss
// (apply_loss_mask and auxiliary losses included) with respect to each model
// output. For simple and hunyuan it is the prediction gradient itself.
package flow
