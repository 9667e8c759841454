package kernels

import "math"

// The sinusoidal tables are computed on the host in float64 and rounded to
// float32: with t near 1000 a float32 argument is off by ~5e-5 rad, which
// alone costs up to 1e-4 relative error downstream (fm-dit.md step 3). They
// are tiny ([B,256] and [N,D]) and have no gradient.

// TimestepEmbedding writes temb[b, 0:dim] = concat(cos(t_b·f), sin(t_b·f))
// with f_i = exp(-ln(10000)·i/(dim/2)) (fm-dit.md step 3) for each of the
// len(t) timesteps. dim must be even.
func TimestepEmbedding(temb, t []float32, dim int) {
	half := dim / 2
	for b, tb := range t {
		row := temb[b*dim : (b+1)*dim]
		for i := 0; i < half; i++ {
			f := math.Exp(-math.Log(10000) * float64(i) / float64(half))
			a := float64(tb) * f
			row[i] = float32(math.Cos(a))
			row[half+i] = float32(math.Sin(a))
		}
	}
}

// sincos writes d features of position q: sin(q·w_i) then cos(q·w_i),
// w_i = 10000^(-i/(d/2)).
func sincos(out []float32, q int, d int) {
	half := d / 2
	for i := 0; i < half; i++ {
		w := math.Pow(10000, -float64(i)/float64(half))
		out[i] = float32(math.Sin(float64(q) * w))
		out[half+i] = float32(math.Cos(float64(q) * w))
	}
}

// PositionTable writes pos[n, 0:D] for the Fp·Hp·Wp tokens, token n =
// (fi·Hp + hi)·Wp + wi: concat(sincos(fi, D/4), sincos(hi, 3D/8),
// sincos(wi, 3D/8)) (fm-dit.md step 2). D must be a multiple of 16.
func PositionTable(pos []float32, Fp, Hp, Wp, D int) {
	df, dhw := D/4, 3*D/8
	for fi := 0; fi < Fp; fi++ {
		for hi := 0; hi < Hp; hi++ {
			for wi := 0; wi < Wp; wi++ {
				row := pos[((fi*Hp+hi)*Wp+wi)*D:]
				sincos(row[:df], fi, df)
				sincos(row[df:df+dhw], hi, dhw)
				sincos(row[df+dhw:D], wi, dhw)
			}
		}
	}
}
