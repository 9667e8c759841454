package flow

import (
	"context"
	"fmt"
	"math"
	"slices"
)

// Helpers shared by the adapters: kwargs parsing, text embeddings, casts,
// 2×2 packing and the model call.

// kwargs reads constructor arguments, remembering which were used so that
// unknown ones are reported (Python raises TypeError for them).
type kwargs struct {
	m    map[string]any
	used map[string]bool
	err  error
}

func newKwargs(m map[string]any) *kwargs { return &kwargs{m: m, used: map[string]bool{}} }

func (k *kwargs) float(name string, def float64) float64 {
	v, ok := k.m[name]
	if !ok {
		return def
	}
	k.used[name] = true
	switch x := v.(type) {
	case float64:
		return x
	case float32:
		return float64(x)
	case int:
		return float64(x)
	case int64:
		return float64(x)
	}
	k.fail(fmt.Errorf("%s is %T (%v), want a number", name, v, v))
	return def
}

func (k *kwargs) bool(name string, def bool) bool {
	v, ok := k.m[name]
	if !ok {
		return def
	}
	k.used[name] = true
	b, isBool := v.(bool)
	if !isBool {
		k.fail(fmt.Errorf("%s is %T (%v), want true or false", name, v, v))
		return def
	}
	return b
}

func (k *kwargs) ints(name string, def []int) []int {
	v, ok := k.m[name]
	if !ok {
		return def
	}
	k.used[name] = true
	var out []int
	switch x := v.(type) {
	case []int:
		out = x
	case []any:
		for _, e := range x {
			switch n := e.(type) {
			case int:
				out = append(out, n)
			case float64:
				if n != math.Trunc(n) {
					k.fail(fmt.Errorf("%s has non-integer %v", name, n))
				}
				out = append(out, int(n))
			default:
				k.fail(fmt.Errorf("%s has %T (%v), want integers", name, e, e))
			}
		}
	default:
		k.fail(fmt.Errorf("%s is %T (%v), want a list of integers", name, v, v))
	}
	return out
}

func (k *kwargs) fail(err error) {
	if k.err == nil {
		k.err = err
	}
}

// done reports the first ill-typed or unknown argument.
func (k *kwargs) done() error {
	if k.err != nil {
		return k.err
	}
	var unknown []string
	for name := range k.m {
		if !k.used[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return fmt.Errorf("unexpected keyword argument(s) %q", unknown)
	}
	return nil
}

// textEmbeddings returns batch[key] cast to dtype, a 2D [L,D] tensor
// unsqueezed to [1,L,D] when unsqueeze2D is set.
func textEmbeddings(b Batch, key string, dtype DType, unsqueeze2D bool) (*Tensor, error) {
	t := b.Tensor(key)
	if t == nil {
		return nil, fmt.Errorf("batch has no %q tensor", key)
	}
	out := t.To(dtype)
	if unsqueeze2D && out.Rank() == 2 {
		out.Shape = append([]int{1}, out.Shape...)
	}
	return out, nil
}

// castTimesteps returns t.to(dtype), shape [B].
func castTimesteps(t []float32, dtype DType) *Tensor {
	return FromFloat32(dtype, slices.Clone(t), len(t))
}

// castTimestepsDiv1000 returns t.to(dtype)/1000 computed in dtype, the
// Flux/Flux2/Qwen timestep: a float32 true division rounded to dtype.
func castTimestepsDiv1000(t []float32, dtype DType) *Tensor {
	out := make([]float32, len(t))
	for i, v := range t {
		out[i] = RoundTo(dtype, float32(RoundTo(dtype, v)/1000))
	}
	return &Tensor{Shape: []int{len(t)}, DType: dtype, Data: out}
}

// pack2x2 is Flux's packing: [B,C,H,W] → [B,(H/2)(W/2),4C] with
// out[b, i·(W/2)+j, c·4 + 2·di + dj] = x[b, c, 2i+di, 2j+dj].
func pack2x2(x *Tensor) *Tensor {
	B, C, H, W := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	h2, w2 := H/2, W/2
	out := NewTensor(x.DType, B, h2*w2, 4*C)
	for b := range B {
		for c := range C {
			for i := range h2 {
				for di := range 2 {
					for j := range w2 {
						for dj := range 2 {
							out.Data[((b*h2*w2)+i*w2+j)*4*C+c*4+2*di+dj] = x.Data[((b*C+c)*H+2*i+di)*W+2*j+dj]
						}
					}
				}
			}
		}
	}
	return out
}

// unpack2x2 is the exact inverse of pack2x2 for tokens [B, N≥(H/2)(W/2), 4C]:
// only the first (H/2)(W/2) tokens are read.
func unpack2x2(tok *Tensor, C, H, W int) *Tensor {
	B, N, F := tok.Shape[0], tok.Shape[1], tok.Shape[2]
	h2, w2 := H/2, W/2
	out := NewTensor(tok.DType, B, C, H, W)
	for b := range B {
		for c := range C {
			for i := range h2 {
				for di := range 2 {
					for j := range w2 {
						for dj := range 2 {
							out.Data[((b*C+c)*H+2*i+di)*W+2*j+dj] = tok.Data[(b*N+i*w2+j)*F+c*4+2*di+dj]
						}
					}
				}
			}
		}
	}
	return out
}

// flattenSpatial is [B,C,S…] → [B, ΠS, C] (token n = row-major spatial index).
func flattenSpatial(x *Tensor) *Tensor {
	B, C := x.Shape[0], x.Shape[1]
	S := numel(x.Shape[2:])
	out := NewTensor(x.DType, B, S, C)
	for b := range B {
		for c := range C {
			for s := range S {
				out.Data[(b*S+s)*C+c] = x.Data[(b*C+c)*S+s]
			}
		}
	}
	return out
}

// unflattenSpatial is the inverse of flattenSpatial: [B,S,C] → [B,C,spatial…].
func unflattenSpatial(tok *Tensor, spatial []int) *Tensor {
	B, S, C := tok.Shape[0], tok.Shape[1], tok.Shape[2]
	out := NewTensor(tok.DType, append([]int{B, C}, spatial...)...)
	for b := range B {
		for c := range C {
			for s := range S {
				out.Data[(b*C+c)*S+s] = tok.Data[(b*S+s)*C+c]
			}
		}
	}
	return out
}

// callModel calls the model with inputs' non-private keys as keyword
// arguments (plus return_dict=false) after the given positional ones.
func callModel(ctx context.Context, model Model, args []any, kw map[string]any) ([]*Tensor, error) {
	if model == nil {
		return nil, fmt.Errorf("nil model")
	}
	kw["return_dict"] = false
	out, err := model.Forward(ctx, &ModelCall{Args: args, Kwargs: kw})
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if len(out) == 0 || out[0] == nil {
		return nil, fmt.Errorf("model returned no output")
	}
	return out, nil
}

// publicKwargs copies inputs without its private ("_") keys.
func publicKwargs(in Inputs) map[string]any {
	kw := make(map[string]any, len(in)+1)
	for k, v := range in {
		if len(k) > 0 && k[0] == '_' {
			continue
		}
		kw[k] = v
	}
	return kw
}

// requireRank errors unless t has the given rank.
func requireRank(t *Tensor, rank int, what string) error {
	if t.Rank() != rank {
		return fmt.Errorf("%s must be %dD, got shape %v", what, rank, t.Shape)
	}
	return nil
}

// checkOutputShape errors unless out has exactly shape want.
func checkOutputShape(out *Tensor, want []int, what string) error {
	if !slices.Equal(out.Shape, want) {
		return fmt.Errorf("model output %s has shape %v, want %v", what, out.Shape, want)
	}
	return nil
}

// postProcess is NeMo's default post_process_prediction: the first output.
func postProcess(out []*Tensor) *Tensor { return out[0] }
