package kernels

import "math"

// Float32 exp for the hot elementwise loops (softmax, GELU, SiLU): Go's math
// package works in float64 and is several times slower. It follows Cephes'
// expf (a few float32 ulp, checked by TestFastMath) and avoids
// data-dependent branches in the common range, which matter more than
// arithmetic here: GELU's inputs straddle zero at random.

// exp32 returns e^x; results below float32's normal range flush to 0.
func exp32(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		c1    = 0.693359375    // ln 2, high part (exact in float32)
		c2    = -2.12194440e-4 // ln 2 - c1
		round = 12582912       // 1.5·2^23: adding and subtracting it rounds to an integer
	)
	if x > 88.72283 {
		return float32(math.Inf(1))
	}
	if !(x >= -87.33654) { // also catches NaN... as 0, and -Inf
		return 0
	}
	n := x*log2e + round
	n -= round
	r := x - n*c1 - n*c2
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	p = p*r*r + r + 1
	return p * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// sigmoid32 returns 1/(1+e^-x), accurate to a few ulp everywhere (no
// cancellation: the denominator is at least 1).
func sigmoid32(x float32) float32 { return 1 / (1 + exp32(-x)) }

// GELU's tanh form through the sigmoid: 0.5·(1+tanh(u)) = sigmoid(2u), so
// GELU(x) = x·sigmoid(2u) with u = sqrt(2/pi)·(x+0.044715x³), and
// GELU'(x) = s + 2x·s·(1−s)·u' with s = sigmoid(2u).

// gelu32 returns GELU(x).
func gelu32(x float32) float32 {
	return x * sigmoid32(2*geluC*(x+0.044715*x*x*x))
}

// geluGrad32 returns GELU'(x).
func geluGrad32(x float32) float32 {
	s := sigmoid32(2 * geluC * (x + 0.044715*x*x*x))
	du := geluC * (1 + 3*0.044715*x*x)
	return s + 2*x*s*(1-s)*du
}
