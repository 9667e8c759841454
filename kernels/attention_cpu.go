package kernels

import "math"

// AttentionForward implements Backend. Work items are (sample, head) pairs;
// each worker holds one head's [Nq,Nk] score matrix at a time.
func (c *CPU) AttentionForward(out, lse, q, k, v, mask []float32, d AttentionDims) {
	c.attention(false, attentionJob{out: out, lse: lse, q: q, k: k, v: v, mask: mask, d: d})
}

// AttentionBackward implements Backend. It recomputes each head's
// probabilities from q, k and the saved log-sum-exp (flash-attention style),
// so forward saves only [B,Heads,Nq] floats per attention.
func (c *CPU) AttentionBackward(dq, dk, dv, dout, q, k, v, mask, out, lse []float32, d AttentionDims) {
	c.attention(true, attentionJob{dq: dq, dk: dk, dv: dv, dout: dout, out: out, lse: lse, q: q, k: k, v: v, mask: mask, d: d})
}

func (c *CPU) attention(backward bool, j attentionJob) {
	need := j.d.Nq * j.d.Nk
	if backward {
		need *= 2
	}
	for w := range c.attnScratch {
		if len(c.attnScratch[w]) < need {
			c.attnScratch[w] = make([]float32, need)
		}
	}
	j.backward, j.kern, j.scratch = backward, c.kern, c.attnScratch
	c.attn = j
	c.pool.do(&c.attn, j.d.B*j.d.Heads, 1)
	c.attn = attentionJob{}
}

type attentionJob struct {
	backward                bool
	kern                    sgemmKernel
	scratch                 [][]float32
	out, lse, q, k, v, mask []float32
	dq, dk, dv, dout        []float32
	d                       AttentionDims
}

func (j *attentionJob) run(worker, lo, hi int) {
	for it := lo; it < hi; it++ {
		if j.backward {
			j.backwardItem(worker, it/j.d.Heads, it%j.d.Heads)
		} else {
			j.forwardItem(worker, it/j.d.Heads, it%j.d.Heads)
		}
	}
}

// maskRow returns sample b's key mask, or nil, and how many keys it keeps.
func (j *attentionJob) maskRow(b int) ([]float32, int) {
	if j.mask == nil {
		return nil, j.d.Nk
	}
	m := j.mask[b*j.d.Nk : (b+1)*j.d.Nk]
	kept := 0
	for _, v := range m {
		if v != 0 {
			kept++
		}
	}
	return m, kept
}

func (j *attentionJob) forwardItem(w, b, h int) {
	d := j.d
	off := h * d.HeadDim
	qb := j.q[b*d.Nq*d.QRow+off:]
	kb := j.k[b*d.Nk*d.KRow+off:]
	vb := j.v[b*d.Nk*d.VRow+off:]
	ob := j.out[b*d.Nq*d.ORow+off:]
	lse := j.lse[(b*d.Heads+h)*d.Nq : (b*d.Heads+h+1)*d.Nq]
	mask, kept := j.maskRow(b)
	if kept == 0 {
		inf := float32(math.Inf(1))
		for i := 0; i < d.Nq; i++ {
			clear(ob[i*d.ORow : i*d.ORow+d.HeadDim])
			lse[i] = inf
		}
		return
	}
	s := j.scratch[w][:d.Nq*d.Nk]
	j.kern.sgemm(w, false, true, d.Nq, d.Nk, d.HeadDim, d.Scale, qb, d.QRow, kb, d.KRow, 0, s, d.Nk)
	negInf := float32(math.Inf(-1))
	for i := 0; i < d.Nq; i++ {
		row := s[i*d.Nk : (i+1)*d.Nk]
		mx := negInf
		for t, x := range row {
			if mask != nil && mask[t] == 0 {
				row[t] = negInf
				continue
			}
			mx = max(mx, x)
		}
		expShiftSlice(row, mx)
		var sum float32
		for t, e := range row {
			if mask != nil && mask[t] == 0 {
				row[t] = 0 // exactly: padded keys get no weight and no gradient
				continue
			}
			sum += e
		}
		inv := 1 / sum
		for t := range row {
			row[t] *= inv
		}
		lse[i] = mx + float32(math.Log(float64(sum)))
	}
	j.kern.sgemm(w, false, false, d.Nq, d.HeadDim, d.Nk, 1, s, d.Nk, vb, d.VRow, 0, ob, d.ORow)
}

func (j *attentionJob) backwardItem(w, b, h int) {
	d := j.d
	mask, kept := j.maskRow(b)
	if kept == 0 {
		return // zero output, no gradient
	}
	off := h * d.HeadDim
	qb := j.q[b*d.Nq*d.QRow+off:]
	kb := j.k[b*d.Nk*d.KRow+off:]
	vb := j.v[b*d.Nk*d.VRow+off:]
	ob := j.out[b*d.Nq*d.ORow+off:]
	dob := j.dout[b*d.Nq*d.ORow+off:]
	dqb := j.dq[b*d.Nq*d.QRow+off:]
	dkb := j.dk[b*d.Nk*d.KRow+off:]
	dvb := j.dv[b*d.Nk*d.VRow+off:]
	lse := j.lse[(b*d.Heads+h)*d.Nq : (b*d.Heads+h+1)*d.Nq]
	nn := d.Nq * d.Nk
	p := j.scratch[w][:nn]
	dp := j.scratch[w][nn : 2*nn]
	j.kern.sgemm(w, false, true, d.Nq, d.Nk, d.HeadDim, d.Scale, qb, d.QRow, kb, d.KRow, 0, p, d.Nk)
	for i := 0; i < d.Nq; i++ {
		row := p[i*d.Nk : (i+1)*d.Nk]
		expShiftSlice(row, lse[i])
		if mask != nil {
			for t, m := range mask {
				if m == 0 {
					row[t] = 0
				}
			}
		}
	}
	j.kern.sgemm(w, false, true, d.Nq, d.Nk, d.HeadDim, 1, dob, d.ORow, vb, d.VRow, 0, dp, d.Nk)
	j.kern.sgemm(w, true, false, d.Nk, d.HeadDim, d.Nq, 1, p, d.Nk, dob, d.ORow, 1, dvb, d.VRow)
	for i := 0; i < d.Nq; i++ {
		do := dob[i*d.ORow : i*d.ORow+d.HeadDim]
		o := ob[i*d.ORow : i*d.ORow+d.HeadDim]
		var rowDot float32
		for c, g := range do {
			rowDot += g * o[c]
		}
		pr := p[i*d.Nk : (i+1)*d.Nk]
		dr := dp[i*d.Nk : (i+1)*d.Nk]
		for t, pv := range pr {
			dr[t] = pv * (dr[t] - rowDot) * d.Scale
		}
	}
	j.kern.sgemm(w, false, false, d.Nq, d.HeadDim, d.Nk, 1, dp, d.Nk, kb, d.KRow, 1, dqb, d.QRow)
	j.kern.sgemm(w, true, false, d.Nk, d.HeadDim, d.Nq, 1, dp, d.Nk, qb, d.QRow, 1, dkb, d.KRow)
}
