// Package flow is fmtrain's port of NeMo AutoModel's FlowMatchingPipeline and
// its model adapters: timestep sampling, flow shift, interpolation, loss
// weighting, task type, metrics and loss checks. It knows no concrete model,
// no network and no device.
package flow
