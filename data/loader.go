package data

import (
	"fmt"

	"github.com/fmtrain/fmtrain/flow"
)

// Loader assembles flow batches from positions. Used by one goroutine at a
// time (its Order caches a permutation).
type Loader struct {
	ds    *Dataset
	order *Order
}

// NewLoader reads ds in the order of the job seed.
func NewLoader(ds *Dataset, seed uint64, shuffle bool) *Loader {
	return &Loader{ds: ds, order: NewOrder(ds.Len(), seed, shuffle)}
}

// Dataset returns the loader's dataset.
func (l *Loader) Dataset() *Dataset { return l.ds }

// Batch reads the samples at positions into a flow batch as NeMo's collate
// builds it: "image_latents" [B,C,H,W] or "video_latents" [B,C,F,H,W],
// "text_embeddings" [B,S,Dt], "text_mask" [B,S] (float32 0/1) and
// "data_type". It also returns the dataset indices and the epoch of the
// first position.
func (l *Loader) Batch(positions []int64) (flow.Batch, []int, int, error) {
	m := l.ds.Manifest
	B := len(positions)
	if B == 0 {
		return nil, nil, 0, fmt.Errorf("data: empty batch")
	}
	nl, nt, nm := l.ds.LatentSize(), l.ds.TextSize(), l.ds.MaskSize()
	lat := make([]float32, B*nl)
	txt := make([]float32, B*nt)
	mask := make([]float32, B*nm)
	idx := make([]int, B)
	firstEpoch := 0
	for b, pos := range positions {
		epoch, i := l.order.Index(pos)
		if b == 0 {
			firstEpoch = epoch
		}
		idx[b] = i
		if _, err := l.ds.Read(i, lat[b*nl:(b+1)*nl], txt[b*nt:(b+1)*nt], mask[b*nm:(b+1)*nm]); err != nil {
			return nil, nil, 0, err
		}
	}
	key := "image_latents"
	if m.DataType == "video" {
		key = "video_latents"
	}
	batch := flow.Batch{
		key:               flow.FromFloat32(flow.Float32, lat, append([]int{B}, m.LatentShape...)...),
		"text_embeddings": flow.FromFloat32(flow.Float32, txt, B, m.TextLen, m.TextDim),
		"text_mask":       flow.FromFloat32(flow.Float32, mask, B, m.TextLen),
		"data_type":       m.DataType,
	}
	return batch, idx, firstEpoch, nil
}
