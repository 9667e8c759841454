package cuda

// flash_attention_tc.cu in Go, for the emulator: the tensor-core forward
// and an emulated mma.sync.aligned.m16n8k16 (bf16, fp32 accumulate). Its
// fragments follow the PTX ISA's layout, which the .cu's comment repeats;
// registers are pairs of bf16 values (as float32s, the lower index first).
// Shared memory is one float32 slot per bf16 element, indexed as the .cu
// indexes its unsigned short tiles.

// faPair is a register holding two bf16 values.
type faPair [2]float32

// ftMMA is ft_mma: d += a·b over the warp. Every lane passes its
// fragments and gets its own four D elements; the sums are formed in
// float64 and rounded once (the hardware's order inside a k16 step is its
// own; bf16 products are exact either way).
func (t *emuThread) ftMMA(d *[4]float32, a [4]faPair, b [2]faPair) {
	slots := t.b.mma[t.mmas%2]
	t.mmas++
	mine := slots[t.tid*emuMMAWidth:]
	for i, r := range a {
		mine[2*i], mine[2*i+1] = r[0], r[1]
	}
	for i, r := range b {
		mine[8+2*i], mine[8+2*i+1] = r[0], r[1]
	}
	t.await(t.b.warps[t.tid/32], "mma.sync")
	warp := slots[(t.tid/32)*32*emuMMAWidth:]
	var A [16][16]float32
	var B [16][8]float32
	for ln := range 32 {
		g, tq := ln/4, ln%4
		f := warp[ln*emuMMAWidth:]
		A[g][2*tq], A[g][2*tq+1] = f[0], f[1]
		A[g+8][2*tq], A[g+8][2*tq+1] = f[2], f[3]
		A[g][2*tq+8], A[g][2*tq+9] = f[4], f[5]
		A[g+8][2*tq+8], A[g+8][2*tq+9] = f[6], f[7]
		B[2*tq][g], B[2*tq+1][g] = f[8], f[9]
		B[2*tq+8][g], B[2*tq+9][g] = f[10], f[11]
	}
	g, tq := (t.tid%32)/4, t.tid%4
	for i := range 4 {
		row, col := g+8*(i/2), 2*tq+i%2
		s := float64(d[i])
		for k := range 16 {
			s += float64(A[row][k]) * float64(B[k][col])
		}
		d[i] = float32(s)
	}
}

// emuMMAWidth is the floats one lane posts for an mma: 4 A and 2 B registers.
const emuMMAWidth = 12

// ftPack is ft_pack.
func ftPack(lo, hi float32) faPair { return faPair{faRound(lo, true), faRound(hi, true)} }

// ftPair is ft_pair.
func ftPair(tile []float32, i int) faPair { return faPair{tile[i], tile[i+1]} }

// ftLoadTile is ft_load_tile.
func ftLoadTile(t *emuThread, hdp int, tile []float32, rows int, src emuTensor, base, row0, n, hd, rowStride int) {
	for idx := t.tid; idx < rows*hdp; idx += flashThreads {
		r, c := idx/hdp, idx%hdp
		v := float32(0)
		if row0+r < n && c < hd {
			v = src.ld(base + (row0+r)*rowStride + c)
		}
		tile[r*(hdp+8)+c] = faRound(v, true)
	}
}

// ftPlace is ft_place.
func ftPlace(t *emuThread, n, heads int) (b, h, bh, row0, g, tq, r0 int) {
	tiles := (n + flashBR - 1) / flashBR
	bh, lane := t.b.idx/tiles, t.tid%32
	return bh / heads, bh % heads, bh, (t.b.idx % tiles) * flashBR, lane / 4, lane % 4, (t.tid / 32) * 16
}

// ftForward is ft_forward.
func ftForward(t *emuThread, hdp int, O emuTensor, lse []float32, Q, K, V emuTensor, mask []float32, a faArgs) {
	BR, BC, LD, KS, NT, DT := flashBR, flashBCFwd, hdp+8, hdp/16, flashBCFwd/8, hdp/8
	sQ := t.b.smem
	sK := sQ[BR*LD:]
	sV := sK[BC*LD:]
	b, h, bh, q0, g, tq, r0 := ftPlace(t, a.nq, a.heads)
	var mk []float32
	if mask != nil {
		mk = mask[b*a.nk:]
	}
	ftLoadTile(t, hdp, sQ, BR, Q, b*a.nq*a.qrow+h*a.hd, q0, a.nq, a.hd, a.qrow)
	t.syncthreads()
	qa := make([][4]faPair, KS)
	for kk := range KS {
		i := (r0+g)*LD + kk*16 + 2*tq
		qa[kk] = [4]faPair{ftPair(sQ, i), ftPair(sQ, i+8*LD), ftPair(sQ, i+8), ftPair(sQ, i+8*LD+8)}
	}
	m, l := []float32{-faInf, -faInf}, []float32{0, 0}
	acc := make([][4]float32, DT)
	for k0 := 0; k0 < a.nk; k0 += BC {
		t.syncthreads()
		ftLoadTile(t, hdp, sK, BC, K, b*a.nk*a.krow+h*a.hd, k0, a.nk, a.hd, a.krow)
		ftLoadTile(t, hdp, sV, BC, V, b*a.nk*a.vrow+h*a.hd, k0, a.nk, a.hd, a.vrow)
		t.syncthreads()
		s := make([][4]float32, NT)
		for j := range NT {
			for kk := range KS {
				i := (8*j+g)*LD + kk*16 + 2*tq
				t.ftMMA(&s[j], qa[kk], [2]faPair{ftPair(sK, i), ftPair(sK, i+8)})
			}
		}
		mx := []float32{-faInf, -faInf}
		for j := range NT {
			for i := range 4 {
				if faKeep(mk, k0+8*j+2*tq+i&1, a.nk) {
					s[j][i] *= a.scale
				} else {
					s[j][i] = -faInf
				}
				mx[i/2] = fmaxf(mx[i/2], s[j][i])
			}
		}
		for o := 1; o < 4; o <<= 1 {
			sh := t.shflXor(mx, o)
			for r := range 2 {
				mx[r] = fmaxf(mx[r], sh[r])
			}
		}
		var alpha [2]float32
		for r := range 2 {
			mnew := fmaxf(m[r], mx[r])
			if m[r] != -faInf {
				alpha[r] = expf(m[r] - mnew)
			}
			m[r] = mnew
			l[r] *= alpha[r]
		}
		for d := range DT {
			for i := range 4 {
				acc[d][i] *= alpha[i/2]
			}
		}
		sum := []float32{0, 0}
		pa := make([][4]faPair, NT/2)
		for kk := range NT / 2 {
			var p [2][4]float32
			for jj := range 2 {
				for i := range 4 {
					if v := s[2*kk+jj][i]; v != -faInf {
						p[jj][i] = expf(v - m[i/2])
					}
					sum[i/2] += p[jj][i]
				}
			}
			pa[kk] = [4]faPair{ftPack(p[0][0], p[0][1]), ftPack(p[0][2], p[0][3]), ftPack(p[1][0], p[1][1]), ftPack(p[1][2], p[1][3])}
		}
		for o := 1; o < 4; o <<= 1 {
			sh := t.shflXor(sum, o)
			for r := range 2 {
				sum[r] += sh[r]
			}
		}
		for r := range 2 {
			l[r] += sum[r]
		}
		for kk := range NT / 2 {
			for d := range DT {
				v := (16*kk+2*tq)*LD + 8*d + g
				t.ftMMA(&acc[d], pa[kk], [2]faPair{{sV[v], sV[v+LD]}, {sV[v+8*LD], sV[v+9*LD]}})
			}
		}
	}
	rowBase := bh * a.nq
	for r := range 2 {
		row := q0 + r0 + g + 8*r
		if row >= a.nq {
			continue
		}
		none := m[r] == -faInf
		inv := float32(0)
		if !none {
			inv = 1 / l[r]
		}
		o := (b*a.nq+row)*a.orow + h*a.hd
		for d := range DT {
			for c := range 2 {
				if col := 8*d + 2*tq + c; col < a.hd {
					O.st(o+col, acc[d][2*r+c]*inv)
				}
			}
		}
		if tq == 0 {
			if none {
				lse[rowBase+row] = faInf
			} else {
				lse[rowBase+row] = m[r] + logf(l[r])
			}
		}
	}
}

// ftBRows is ft_b_rows.
func ftBRows(hdp int, tile []float32, kk, n0, g, t int) [2]faPair {
	ld := hdp + 8
	p := (16*kk+2*t)*ld + n0 + g
	return [2]faPair{{tile[p], tile[p+ld]}, {tile[p+8*ld], tile[p+9*ld]}}
}

// ftBCols is ft_b_cols.
func ftBCols(hdp int, tile []float32, kk, n0, g, t int) [2]faPair {
	i := (n0+g)*(hdp+8) + kk*16 + 2*t
	return [2]faPair{ftPair(tile, i), ftPair(tile, i+8)}
}

// ftARows is ft_a_rows.
func ftARows(hdp int, tile []float32, kk, r0, g, t int) [4]faPair {
	ld := hdp + 8
	i := (r0+g)*ld + kk*16 + 2*t
	return [4]faPair{ftPair(tile, i), ftPair(tile, i+8*ld), ftPair(tile, i+8), ftPair(tile, i+8*ld+8)}
}

// ftAFromC is ft_a_from_c.
func ftAFromC(c0, c1 [4]float32) [4]faPair {
	return [4]faPair{ftPack(c0[0], c0[1]), ftPack(c0[2], c0[3]), ftPack(c1[0], c1[1]), ftPack(c1[2], c1[3])}
}

// ftBackwardDKDV is ft_backward_dkdv.
func ftBackwardDKDV(t *emuThread, hdp int, dK, dV, dO []float32, Q, K, V emuTensor, mask, lse, D []float32, a faArgs) {
	BK, BQ, LD, KS, NT, DT := flashBR, flashBCBwd, hdp+8, hdp/16, flashBCBwd/8, hdp/8
	sK := t.b.smem
	sV := sK[BK*LD:]
	sQ := sV[BK*LD:]
	sdO := sQ[BQ*LD:]
	sL := sdO[BQ*LD:]
	sD := sL[BQ:]
	b, h, bh, k0, g, tq, r0 := ftPlace(t, a.nk, a.heads)
	var mk []float32
	if mask != nil {
		mk = mask[b*a.nk:]
	}
	rowBase := bh * a.nq
	ftLoadTile(t, hdp, sK, BK, K, b*a.nk*a.krow+h*a.hd, k0, a.nk, a.hd, a.krow)
	ftLoadTile(t, hdp, sV, BK, V, b*a.nk*a.vrow+h*a.hd, k0, a.nk, a.hd, a.vrow)
	keep := [2]bool{faKeep(mk, k0+r0+g, a.nk), faKeep(mk, k0+r0+g+8, a.nk)}
	dk, dv := make([][4]float32, DT), make([][4]float32, DT)
	for q0 := 0; q0 < a.nq; q0 += BQ {
		t.syncthreads()
		ftLoadTile(t, hdp, sQ, BQ, Q, b*a.nq*a.qrow+h*a.hd, q0, a.nq, a.hd, a.qrow)
		ftLoadTile(t, hdp, sdO, BQ, emuTensor{f: dO}, b*a.nq*a.orow+h*a.hd, q0, a.nq, a.hd, a.orow)
		for r := t.tid; r < BQ; r += flashThreads {
			sL[r], sD[r] = faInf, 0
			if q0+r < a.nq {
				sL[r], sD[r] = lse[rowBase+q0+r], D[rowBase+q0+r]
			}
		}
		t.syncthreads()
		s, dp := make([][4]float32, NT), make([][4]float32, NT)
		for kk := range KS {
			ka, va := ftARows(hdp, sK, kk, r0, g, tq), ftARows(hdp, sV, kk, r0, g, tq)
			for j := range NT {
				t.ftMMA(&s[j], ka, ftBCols(hdp, sQ, kk, 8*j, g, tq))
				t.ftMMA(&dp[j], va, ftBCols(hdp, sdO, kk, 8*j, g, tq))
			}
		}
		for j := range NT {
			for i := range 4 {
				q := 8*j + 2*tq + i&1
				l := sL[q]
				p := float32(0)
				if l != faInf && keep[i/2] {
					p = expf(s[j][i]*a.scale - l)
				}
				s[j][i] = p
				dp[j][i] = p * (dp[j][i] - sD[q]) * a.scale
			}
		}
		for kk := range NT / 2 {
			pa, dsa := ftAFromC(s[2*kk], s[2*kk+1]), ftAFromC(dp[2*kk], dp[2*kk+1])
			for d := range DT {
				if dV != nil {
					t.ftMMA(&dv[d], pa, ftBRows(hdp, sdO, kk, 8*d, g, tq))
				}
				if dK != nil {
					t.ftMMA(&dk[d], dsa, ftBRows(hdp, sQ, kk, 8*d, g, tq))
				}
			}
		}
	}
	for r := range 2 {
		key := k0 + r0 + g + 8*r
		if key >= a.nk {
			continue
		}
		for d := range DT {
			for c := range 2 {
				col := 8*d + 2*tq + c
				if col >= a.hd {
					continue
				}
				if dK != nil {
					dK[(b*a.nk+key)*a.krow+h*a.hd+col] += dk[d][2*r+c]
				}
				if dV != nil {
					dV[(b*a.nk+key)*a.vrow+h*a.hd+col] += dv[d][2*r+c]
				}
			}
		}
	}
}

// ftBackwardDQ is ft_backward_dq.
func ftBackwardDQ(t *emuThread, hdp int, dQ, dO []float32, Q, K, V emuTensor, mask, lse, D []float32, a faArgs) {
	BR, BC, LD, KS, NT, DT := flashBR, flashBCBwd, hdp+8, hdp/16, flashBCBwd/8, hdp/8
	sQ := t.b.smem
	sdO := sQ[BR*LD:]
	sK := sdO[BR*LD:]
	sV := sK[BC*LD:]
	b, h, bh, q0, g, tq, r0 := ftPlace(t, a.nq, a.heads)
	var mk []float32
	if mask != nil {
		mk = mask[b*a.nk:]
	}
	rowBase := bh * a.nq
	ftLoadTile(t, hdp, sQ, BR, Q, b*a.nq*a.qrow+h*a.hd, q0, a.nq, a.hd, a.qrow)
	ftLoadTile(t, hdp, sdO, BR, emuTensor{f: dO}, b*a.nq*a.orow+h*a.hd, q0, a.nq, a.hd, a.orow)
	t.syncthreads()
	qa, da := make([][4]faPair, KS), make([][4]faPair, KS)
	for kk := range KS {
		qa[kk], da[kk] = ftARows(hdp, sQ, kk, r0, g, tq), ftARows(hdp, sdO, kk, r0, g, tq)
	}
	var L, Dr [2]float32
	for r := range 2 {
		L[r] = faInf
		if row := q0 + r0 + g + 8*r; row < a.nq {
			L[r], Dr[r] = lse[rowBase+row], D[rowBase+row]
		}
	}
	acc := make([][4]float32, DT)
	for k0 := 0; k0 < a.nk; k0 += BC {
		t.syncthreads()
		ftLoadTile(t, hdp, sK, BC, K, b*a.nk*a.krow+h*a.hd, k0, a.nk, a.hd, a.krow)
		ftLoadTile(t, hdp, sV, BC, V, b*a.nk*a.vrow+h*a.hd, k0, a.nk, a.hd, a.vrow)
		t.syncthreads()
		s, dp := make([][4]float32, NT), make([][4]float32, NT)
		for j := range NT {
			for kk := range KS {
				t.ftMMA(&s[j], qa[kk], ftBCols(hdp, sK, kk, 8*j, g, tq))
				t.ftMMA(&dp[j], da[kk], ftBCols(hdp, sV, kk, 8*j, g, tq))
			}
		}
		for j := range NT {
			for i := range 4 {
				l := L[i/2]
				p := float32(0)
				if l != faInf && faKeep(mk, k0+8*j+2*tq+i&1, a.nk) {
					p = expf(s[j][i]*a.scale - l)
				}
				dp[j][i] = p * (dp[j][i] - Dr[i/2]) * a.scale
			}
		}
		for kk := range NT / 2 {
			dsa := ftAFromC(dp[2*kk], dp[2*kk+1])
			for d := range DT {
				t.ftMMA(&acc[d], dsa, ftBRows(hdp, sK, kk, 8*d, g, tq))
			}
		}
	}
	for r := range 2 {
		row := q0 + r0 + g + 8*r
		if row >= a.nq {
			continue
		}
		for d := range DT {
			for c := range 2 {
				if col := 8*d + 2*tq + c; col < a.hd {
					dQ[(b*a.nq+row)*a.qrow+h*a.hd+col] += acc[d][2*r+c]
				}
			}
		}
	}
}
