package train

import (
	"context"
	"slices"
	"testing"

	"github.com/fmtrain/fmtrain/flow"
)

// recordingNet wraps linearNet and remembers the last input.
type recordingNet struct {
	*linearNet
	last Input
}

func (r *recordingNet) Forward(ctx context.Context, in Input) ([]float32, error) {
	r.last = in
	return r.linearNet.Forward(ctx, in)
}

func videoBatch() flow.Batch {
	const B, C, F, H, W, S, Dt = 2, 3, 2, 4, 4, 4, 8
	lat := make([]float32, B*C*F*H*W)
	for i := range lat {
		lat[i] = float32(i%7) / 7
	}
	txt := make([]float32, B*S*Dt)
	for i := range txt {
		txt[i] = float32(i%5) / 5
	}
	return flow.Batch{
		"video_latents":   flow.FromFloat32(flow.Float32, lat, B, C, F, H, W),
		"text_embeddings": flow.FromFloat32(flow.Float32, txt, B, S, Dt),
		"text_mask":       flow.FromFloat32(flow.Float32, []float32{1, 1, 1, 0, 1, 1, 0, 0}, B, S),
		"data_type":       "video",
	}
}

// The wrapper feeds the simple and hunyuan adapters' calls to a Net and
// the pipeline's output gradient comes back in the Net's output layout.
func TestFlowModelAdapters(t *testing.T) {
	for _, c := range []struct {
		adapter  string
		cin, S   int
		wantMask bool
	}{{"simple", 3, 4, false}, {"hunyuan", 7, 3, true}} { // hunyuan truncates text to the longest mask
		t.Run(c.adapter, func(t *testing.T) {
			cfg := flow.DefaultConfig()
			cfg.AdapterType = c.adapter
			p, err := flow.CreatePipeline(cfg, flow.Options{RNG: flow.NewRNG(1, 0)})
			if err != nil {
				t.Fatal(err)
			}
			net := &recordingNet{linearNet: newLinearNet(c.cin, 3, 8, 2)}
			res, err := p.Step(context.Background(), FlowModel{net}, videoBatch(), flow.StepOptions{DType: flow.Float32})
			if err != nil {
				t.Fatal(err)
			}
			in := net.last
			if in.B != 2 || in.C != c.cin || in.F != 2 || in.H != 4 || in.W != 4 || in.S != c.S || len(in.T) != 2 || len(in.Txt) != 2*c.S*8 {
				t.Errorf("net saw B %d C %d F %d H %d W %d S %d, %d timesteps, %d text values", in.B, in.C, in.F, in.H, in.W, in.S, len(in.T), len(in.Txt))
			}
			if (in.Mask != nil) != c.wantMask {
				t.Errorf("mask passed = %v, want %v", in.Mask != nil, c.wantMask)
			}
			d := res.DModelOutputs[0]
			if d == nil || !slices.Equal(d.Shape, []int{2, 3, 2, 4, 4}) {
				t.Fatalf("output gradient %v", d)
			}
			// The gradient of the mean weighted MSE is 2·w·(pred − target)/numel.
			pred, target := res.Prediction.Data, res.Target.Data
			w := res.Loss.LossWeight.Data
			n := float32(len(pred))
			for i := range pred {
				want := 2 * w[i/(len(pred)/2)] * (pred[i] - target[i]) / n
				if diff := d.Data[i] - want; diff > 1e-6 || diff < -1e-6 {
					t.Fatalf("dOut[%d] = %v, want %v", i, d.Data[i], want)
				}
			}
		})
	}
}
