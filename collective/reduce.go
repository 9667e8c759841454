package collective

// add sets dst[i] += src[i]: AVX2 where the CPU has it (addVector), then
// a loop unrolled by eight over re-sliced windows so the compiler drops the
// bounds checks. Either way each element is one IEEE single addition, so
// ranks with and without AVX2 compute the same bits.
func add(dst, src []float32) {
	src = src[:len(dst)]
	i := addVector(dst, src)
	for ; i+8 <= len(dst); i += 8 {
		d := dst[i : i+8 : i+8]
		s := src[i : i+8 : i+8]
		d[0] += s[0]
		d[1] += s[1]
		d[2] += s[2]
		d[3] += s[3]
		d[4] += s[4]
		d[5] += s[5]
		d[6] += s[6]
		d[7] += s[7]
	}
	for ; i < len(dst); i++ {
		dst[i] += src[i]
	}
}

// addDiv sets dst[i] = (dst[i] + src[i]) / n: the last addition of an
// average. Dividing (not multiplying by 1/n) matches PyTorch's div_.
func addDiv(dst, src []float32, n float32) {
	src = src[:len(dst)]
	i := 0
	for ; i+4 <= len(dst); i += 4 {
		d := dst[i : i+4 : i+4]
		s := src[i : i+4 : i+4]
		d[0] = (d[0] + s[0]) / n
		d[1] = (d[1] + s[1]) / n
		d[2] = (d[2] + s[2]) / n
		d[3] = (d[3] + s[3]) / n
	}
	for ; i < len(dst); i++ {
		dst[i] = (dst[i] + src[i]) / n
	}
}

// div sets dst[i] /= n.
func div(dst []float32, n float32) {
	for i := range dst {
		dst[i] /= n
	}
}
