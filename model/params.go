package model

import "fmt"

// Linear is the weight [out,in] and bias [out] of one linear layer: views
// into a flat buffer.
type Linear struct {
	W, B []float32
}

// BlockParams are one transformer block's tensors.
type BlockParams struct {
	AdaLN                     Linear // adaLN_modulation [6D,D]
	QKV, Proj                 Linear // attn.qkv [3D,D], attn.proj [D,D]
	CrossQ, CrossKV, CrossOut Linear // cross_attn.q [D,D], .kv [2D,D], .proj [D,D]
	FC1, FC2                  Linear // mlp.fc1 [M,D], mlp.fc2 [D,M]
}

// Params are named views over a flat buffer laid out by ParamTable: the
// parameter buffer, the gradient buffer, or an optimizer moment buffer.
type Params struct {
	PatchEmbed Linear // [D,K]
	TFC1, TFC2 Linear // t_embedder.fc1 [D,256], fc2 [D,D]
	YFC1, YFC2 Linear // y_embedder.fc1 [D,Dt], fc2 [D,D]
	Blocks     []BlockParams
	FinalAdaLN Linear // final_layer.adaLN_modulation [2D,D]
	Final      Linear // final_layer.linear [pt·p·p·Cout, D]

	// BlockRange[i] is block i's [lo,hi) range in the buffer; EmbedEnd is
	// where the embedders end and FinalStart where the final layer starts.
	BlockRange           [][2]int
	EmbedEnd, FinalStart int
}

// PointParams lays the views of ParamTable(c) over buf, which must hold
// NumParams(c) elements.
func PointParams(c Config, buf []float32) (*Params, error) {
	table := ParamTable(c)
	if n := NumParams(c); len(buf) != n {
		return nil, fmt.Errorf("model: parameter buffer has %d elements, config needs %d", len(buf), n)
	}
	i := 0
	next := func() Linear {
		w, b := table[i], table[i+1]
		i += 2
		return Linear{W: buf[w.Offset : w.Offset+w.Size : w.Offset+w.Size], B: buf[b.Offset : b.Offset+b.Size : b.Offset+b.Size]}
	}
	p := &Params{}
	p.PatchEmbed, p.TFC1, p.TFC2, p.YFC1, p.YFC2 = next(), next(), next(), next(), next()
	p.EmbedEnd = table[i].Offset
	p.Blocks = make([]BlockParams, c.Depth)
	p.BlockRange = make([][2]int, c.Depth)
	for l := range p.Blocks {
		lo := table[i].Offset
		b := &p.Blocks[l]
		b.AdaLN, b.QKV, b.Proj = next(), next(), next()
		b.CrossQ, b.CrossKV, b.CrossOut = next(), next(), next()
		b.FC1, b.FC2 = next(), next()
		p.BlockRange[l] = [2]int{lo, table[i].Offset}
	}
	p.FinalStart = table[i].Offset
	p.FinalAdaLN, p.Final = next(), next()
	return p, nil
}
