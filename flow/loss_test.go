package flow

import (
	"math"
	"strings"
	"testing"
)

func TestBSMNTWVectors(t *testing.T) {
	var f struct {
		Tables []struct {
			T       int    `json:"num_train_timesteps"`
			Weights []jnum `json:"weights"`
			Argmax  *int   `json:"argmax"`
		} `json:"tables"`
	}
	loadVectors(t, "bsmntw.json", &f)
	if len(f.Tables) != 6 {
		t.Fatalf("%d tables, want 6", len(f.Tables))
	}
	for _, tab := range f.Tables {
		got := BSMNTWWeights(tab.T)
		compareF32(t, "bsmntw T="+itoa(tab.T), got, f32s(tab.Weights), 0, 1e-6)
		if tab.T >= 2 {
			var sum float64
			for _, w := range got {
				sum += float64(w)
			}
			if math.Abs(sum-float64(tab.T)) > 1e-3 || got[0] != 0 {
				t.Errorf("T=%d: sum %v (want T), w[0] = %v (want 0)", tab.T, sum, got[0])
			}
		}
	}
}

func TestInterpolationVectors(t *testing.T) {
	var f struct {
		Cases []struct {
			X0, X1, Out *jtensor
			Sigma       *jtensor
		} `json:"cases"`
	}
	loadVectors(t, "interpolation.json", &f)
	if len(f.Cases) != 3 {
		t.Fatalf("%d cases", len(f.Cases))
	}
	for i, c := range f.Cases {
		x0, x1, s := c.X0.tensor(t), c.X1.tensor(t), c.Sigma.tensor(t)
		compareF32(t, "interpolation case "+itoa(i)+" rank "+itoa(x0.Rank()), Interpolate(x0.Data, x1.Data, s.Data), c.Out.tensor(t).Data, 0, 0)
	}
	// σ = 0 and σ = 1 are exact endpoints.
	x0, x1 := []float32{0.1, -3.7}, []float32{2.5, 1e-3}
	if got := Interpolate(x0, x1, []float32{0}); got[0] != x0[0] || got[1] != x0[1] {
		t.Errorf("σ=0: %v, want %v", got, x0)
	}
	if got := Interpolate(x0, x1, []float32{1}); got[0] != x1[0] || got[1] != x1[1] {
		t.Errorf("σ=1: %v, want %v", got, x1)
	}
}

type computeLossCase struct {
	Description    string         `json:"description"`
	PipelineKwargs map[string]any `json:"pipeline_kwargs"`
	Inputs         struct {
		ModelPred *jtensor            `json:"model_pred"`
		Target    *jtensor            `json:"target"`
		Sigma     *jtensor            `json:"sigma"`
		Batch     map[string]*jtensor `json:"batch"`
	} `json:"inputs"`
	Outputs struct {
		WeightedLoss          *jtensor `json:"weighted_loss"`
		AverageWeightedLoss   *jtensor `json:"average_weighted_loss"`
		UnweightedLoss        *jtensor `json:"unweighted_loss"`
		AverageUnweightedLoss *jtensor `json:"average_unweighted_loss"`
		LossWeight            *jtensor `json:"loss_weight"`
		LossMask              *jtensor `json:"loss_mask"`
	} `json:"outputs"`
}

func TestComputeLossVectors(t *testing.T) {
	var f struct {
		Cases []computeLossCase `json:"cases"`
	}
	loadVectors(t, "compute_loss.json", &f)
	if len(f.Cases) != 7 {
		t.Fatalf("%d cases", len(f.Cases))
	}
	for _, c := range f.Cases {
		t.Run(c.Description, func(t *testing.T) {
			p, err := New(configFromKwargs(t, c.PipelineKwargs), SimpleAdapter{}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var batch Batch
			if c.Inputs.Batch != nil {
				batch = Batch{}
				for k, v := range c.Inputs.Batch {
					batch[k] = v.tensor(t)
				}
			}
			out, err := p.ComputeLoss(c.Inputs.ModelPred.tensor(t), c.Inputs.Target.tensor(t), c.Inputs.Sigma.tensor(t).Data, batch)
			if err != nil {
				t.Fatal(err)
			}
			// The multiply is exact; the bsmntw table itself is only within
			// atol 1e-6 of torch's (§5), so the weighted loss is checked
			// exactly against loss · (NeMo's weight) and the weights with atol.
			if wantW := c.Outputs.LossWeight.tensor(t); c.PipelineKwargs["loss_weighting_scheme"] == "bsmntw" {
				per := out.UnweightedLoss.Numel() / len(wantW.Data)
				for i, l := range out.UnweightedLoss.Data {
					if got, want := out.WeightedLoss.Data[i], c.Outputs.WeightedLoss.tensor(t).Data[i]; float32(l*wantW.Data[i/per]) != want || !closeF32(got, want, 0, 1e-6*float64(l)) {
						t.Errorf("weighted_loss[%d] = %v, want %v (= loss %v · NeMo weight %v)", i, got, want, l, wantW.Data[i/per])
					}
				}
			} else {
				compareTensor(t, "weighted_loss", out.WeightedLoss, c.Outputs.WeightedLoss.tensor(t), 0, 0)
			}
			compareTensor(t, "unweighted_loss", out.UnweightedLoss, c.Outputs.UnweightedLoss.tensor(t), 0, 0)
			compareTensor(t, "loss_weight", out.LossWeight, c.Outputs.LossWeight.tensor(t), 0, 1e-6)
			compareF32(t, "average_weighted_loss", []float32{out.AverageWeightedLoss}, c.Outputs.AverageWeightedLoss.tensor(t).Data, 2, 5e-7)
			compareF32(t, "average_unweighted_loss", []float32{out.AverageUnweightedLoss}, c.Outputs.AverageUnweightedLoss.tensor(t).Data, 2, 5e-7)
			compareTensor(t, "loss_mask", out.LossMask, c.Outputs.LossMask.tensor(t), 0, 0)
			if (p.bsmntw != nil) != (c.PipelineKwargs["use_loss_weighting"] == true && c.PipelineKwargs["loss_weighting_scheme"] == "bsmntw") {
				t.Errorf("bsmntw table built = %v", p.bsmntw != nil)
			}
		})
	}
}

func TestApplyLossMask(t *testing.T) {
	// Two samples of 4 elements, linear weights with shift 1: w = 1 + σ.
	cfg := DefaultConfig()
	cfg.FlowShift = 1
	pred := FromFloat32(Float32, []float32{1, 2, 3, 4, 0, 0, 0, 0}, 2, 1, 4)
	target := FromFloat32(Float32, []float32{0, 0, 0, 0, 1, 1, 1, 1}, 2, 1, 4)
	sigma := []float32{0.5, 0}
	mask := FromFloat32(Float32, []float32{1, 1, 0, 0, 1, 0, 0, 0}, 2, 1, 4)
	batch := Batch{"loss_mask": mask}

	off, err := New(cfg, SimpleAdapter{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	o, err := off.ComputeLoss(pred, target, sigma, batch)
	if err != nil {
		t.Fatal(err)
	}
	// NeMo: mean over all 8 of (1,4,9,16)·1.5 and (1,1,1,1)·1 = (45+4)/8.
	if o.AverageWeightedLoss != 49.0/8 {
		t.Errorf("mask off: average %v, want %v", o.AverageWeightedLoss, 49.0/8)
	}
	cfg.ApplyLossMask = true
	on, err := New(cfg, SimpleAdapter{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	o, err = on.ComputeLoss(pred, target, sigma, batch)
	if err != nil {
		t.Fatal(err)
	}
	// Masked: (1·1.5 + 4·1.5 + 1·1)/3 and unweighted (1+4+1)/3.
	if o.AverageWeightedLoss != float32(8.5/3) || o.AverageUnweightedLoss != 2 {
		t.Errorf("mask on: averages %v, %v, want %v, 2", o.AverageWeightedLoss, o.AverageUnweightedLoss, float32(8.5/3))
	}
	// A per-sample [B] mask broadcasts.
	o, err = on.ComputeLoss(pred, target, sigma, Batch{"loss_mask": FromFloat32(Float32, []float32{0, 1}, 2)})
	if err != nil || o.AverageWeightedLoss != 1 {
		t.Errorf("per-sample mask: %v, %v, want 1", o.AverageWeightedLoss, err)
	}
	if _, err = on.ComputeLoss(pred, target, sigma, Batch{"loss_mask": NewTensor(Float32, 2, 1, 4)}); err == nil || !strings.Contains(err.Error(), "sums to zero") {
		t.Errorf("all-zero mask: err %v", err)
	}
	if _, err = on.ComputeLoss(pred, target, sigma, Batch{"loss_mask": NewTensor(Float32, 2, 3)}); err == nil || !strings.Contains(err.Error(), "does not broadcast") {
		t.Errorf("bad mask shape: err %v", err)
	}
}
