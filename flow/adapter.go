package flow

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Context is what the pipeline hands an adapter (NeMo's FlowMatchingContext).
type Context struct {
	NoisyLatents   *Tensor   // x_t in the compute dtype
	Latents        *Tensor   // clean latents X in the compute dtype (NeMo's video_latents alias)
	Timesteps      []float32 // t = σ·T, float32 [B]
	Sigma          []float32 // σ, float32 [B]
	TaskType       string    // "t2v" or "i2v"
	DataType       string    // the batch's data_type ("video" when absent)
	DType          DType     // the compute dtype
	Batch          Batch     // the original batch, uncast
	CFGDropoutProb float64
	RNG            RNG // where the adapter's own draws come from (§8.2 step 4)
}

// Inputs is what PrepareInputs returns and Forward consumes: keyword
// arguments for the model plus private keys starting with "_" that only the
// adapter reads. Values are *Tensor, nil (Python None), int, float64,
// []int, map[string]float64 (attention_kwargs) or [][]ImgShape.
type Inputs map[string]any

// ImgShape is one (frames, height/2, width/2) entry of Qwen's img_shapes.
type ImgShape [3]int

// ModelCall is one call of the model: positional arguments, then keyword
// arguments (value types as in Inputs). Adapters always pass
// return_dict=false, as NeMo does; it is included in Kwargs.
type ModelCall struct {
	Args   []any
	Kwargs map[string]any
}

// Tensor returns the keyword argument name as a tensor (nil if absent/None).
func (c *ModelCall) Tensor(name string) *Tensor {
	t, _ := c.Kwargs[name].(*Tensor)
	return t
}

// Model is the network behind an adapter. Forward returns the model's output
// tuple: one tensor for most models ([B,C,F,H,W] or [B,C,H,W] for simple and
// hunyuan, tokens for the packing adapters), (video, audio) for LTX-2.
//
// A thin wrapper makes any Go model a flow.Model: for "simple" read
// Kwargs["hidden_states"] [B,C,(F,)H,W], Kwargs["timestep"] [B] and
// Kwargs["encoder_hidden_states"] [B,S,Dt] (all float32 data already rounded
// to the compute dtype) and return the velocity in the layout of
// hidden_states; for "hunyuan" the latents and timesteps are Args[0], Args[1].
type Model interface {
	Forward(ctx context.Context, call *ModelCall) ([]*Tensor, error)
}

// ModelFunc adapts a function to Model.
type ModelFunc func(ctx context.Context, call *ModelCall) ([]*Tensor, error)

// Forward implements Model.
func (f ModelFunc) Forward(ctx context.Context, call *ModelCall) ([]*Tensor, error) {
	return f(ctx, call)
}

// KwargFilter is an optional Model interface: a model that implements it
// declares which keyword arguments its forward accepts, and adapters that
// filter (LTX-2, like NeMo's _filter_model_kwargs) drop the others.
type KwargFilter interface {
	AcceptsKwarg(name string) bool
}

// ModelAdapter turns the pipeline's context into a model call and the
// model's output back into a prediction in the latents' layout (NeMo's
// ModelAdapter). Implementations are used by one goroutine at a time.
type ModelAdapter interface {
	// PrepareInputs builds the model inputs, making the adapter's random
	// draws on ctx.RNG.
	PrepareInputs(ctx *Context) (Inputs, error)
	// Forward calls the model and returns the prediction, shaped like the
	// clean latents. It may add or remove private keys of inputs, as NeMo's
	// adapters do. It also returns the model's raw output tuple, which
	// OutputGrad needs.
	Forward(ctx context.Context, model Model, inputs Inputs) (pred *Tensor, outputs []*Tensor, err error)
}

// LossComputer is an optional adapter interface replacing the default loss,
// the element-wise (fl32(pred) − fl32(target))². An adapter with its own
// loss gets no output gradients from Step.
type LossComputer interface {
	ComputeLoss(pred, target *Tensor) (*Tensor, error)
}

// AuxLoss is one named auxiliary loss.
type AuxLoss struct {
	Name  string
	Value float32
}

// AuxLosser is an optional adapter interface: extra scalar losses added to
// the average weighted loss (LTX-2's audio_loss).
type AuxLosser interface {
	AuxiliaryLosses(inputs Inputs) ([]AuxLoss, error)
}

// OutputGrad is an optional adapter interface at the heart of fmtrain's
// training contract: given dPred, the gradient of the scalar loss with
// respect to the prediction (latents layout), it returns the gradient with
// respect to each of the model's outputs, in the model's output layout
// (nil for an output the loss does not depend on). For simple and hunyuan
// this is the identity; for the packing adapters it packs dPred the way the
// model's tokens are laid out. Adapters with auxiliary losses add those
// losses' gradients (LTX-2's audio).
type OutputGrad interface {
	ModelOutputGrad(inputs Inputs, outputs []*Tensor, dPred *Tensor) ([]*Tensor, error)
}

// AdapterFactory builds an adapter from its constructor keyword arguments.
type AdapterFactory func(kwargs map[string]any) (ModelAdapter, error)

var (
	registryMu sync.Mutex
	registry   = map[string]AdapterFactory{}
	// registryOrder keeps NeMo's registry order, which its error lists.
	registryOrder []string
)

// RegisterAdapter makes an adapter available to CreateAdapter by name.
// Registering a name twice panics: it is a programming error.
func RegisterAdapter(name string, f AdapterFactory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if f == nil {
		panic("flow: RegisterAdapter " + name + " with nil factory")
	}
	if _, dup := registry[name]; dup {
		panic("flow: RegisterAdapter called twice for " + name)
	}
	registry[name] = f
	registryOrder = append(registryOrder, name)
}

// AdapterNames lists the registered adapters in registration order (NeMo's
// order for the built-in seven).
func AdapterNames() []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	return slices.Clone(registryOrder)
}

func unknownAdapterError(name string) error {
	names := AdapterNames()
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = "'" + n + "'"
	}
	return fmt.Errorf("Unknown adapter type: %s. Available: [%s]", name, strings.Join(quoted, ", "))
}

// CreateAdapter builds the adapter registered under name (NeMo's
// create_adapter). An unknown name gives NeMo's error listing the
// available ones; unknown or ill-typed kwargs are errors naming them.
func CreateAdapter(name string, kwargs map[string]any) (ModelAdapter, error) {
	registryMu.Lock()
	f, ok := registry[name]
	registryMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("flow: %w", unknownAdapterError(name))
	}
	a, err := f(maps.Clone(kwargs))
	if err != nil {
		return nil, fmt.Errorf("flow: adapter %q: %w", name, err)
	}
	return a, nil
}

// The built-in adapters, in NeMo's registry order.
func init() {
	RegisterAdapter("hunyuan", newHunyuanAdapter)
	RegisterAdapter("simple", newSimpleAdapter)
	RegisterAdapter("flux", newFluxAdapter)
	RegisterAdapter("flux2", newFlux2Adapter)
	RegisterAdapter("qwen_image", newQwenImageAdapter)
	RegisterAdapter("qwen_image_edit", newQwenImageEditAdapter)
	RegisterAdapter("ltx2", newLTX2Adapter)
}
