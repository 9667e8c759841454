package flow

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestGeneratorStateRoundTrip(t *testing.T) {
	g := NewRNG(42, 3)
	g.Rand(5)
	g.Beta(0.7, 2, 3)
	state, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	draw := func(r RNG) []float32 {
		out := r.Rand(4)
		out = append(out, r.Normal(1, 2, 3)...)
		out = append(out, r.Randn(5)...)
		out = append(out, r.Beta(2.5, 1.5, 3)...)
		return append(out, float32(r.Random()))
	}
	want := draw(g)
	restored := NewRNG(0, 0)
	if err := restored.UnmarshalBinary(state); err != nil {
		t.Fatal(err)
	}
	if got := draw(restored); !slices.Equal(got, want) {
		t.Errorf("after restore: %v, want %v", got, want)
	}
	if err := restored.UnmarshalBinary([]byte("garbage")); err == nil || !strings.Contains(err.Error(), "bad magic") {
		t.Errorf("bad state: %v", err)
	}
	// Ranks and seeds give different streams; the same (seed, rank) the same.
	a, b, c := NewRNG(42, 0).Rand(8), NewRNG(42, 1).Rand(8), NewRNG(43, 0).Rand(8)
	if slices.Equal(a, b) || slices.Equal(a, c) || !slices.Equal(a, NewRNG(42, 0).Rand(8)) {
		t.Error("streams are not distinct per (seed, rank) and reproducible")
	}
}

func TestGeneratorMoments(t *testing.T) {
	g := NewRNG(7, 0)
	const n = 200_000
	moments := func(x []float32) (mean, variance float64) {
		m, s := meanStd(x)
		return m, s * s
	}
	u := g.Rand(n)
	if slices.Min(u) < 0 || slices.Max(u) >= 1 {
		t.Errorf("Rand outside [0,1): %v..%v", slices.Min(u), slices.Max(u))
	}
	for _, c := range []struct {
		name        string
		x           []float32
		mean, vari  float64
		lo, hi      float32
		checkBounds bool
	}{
		{"uniform", u, 0.5, 1.0 / 12, 0, 1, true},
		{"normal(1.5, 2)", g.Normal(1.5, 2, n), 1.5, 4, 0, 0, false},
		{"randn", g.Randn(n), 0, 1, 0, 0, false},
		// Beta moments: mean a/(a+b), variance ab/((a+b)²(a+b+1)); a < 1 takes
		// the boosted gamma path.
		{"beta(2.5,1.5)", g.Beta(2.5, 1.5, n), 2.5 / 4, 2.5 * 1.5 / (16 * 5), 0, 1, true},
		{"beta(0.5,0.7)", g.Beta(0.5, 0.7, n), 0.5 / 1.2, 0.35 / (1.44 * 2.2), 0, 1, true},
		{"beta(30,3)", g.Beta(30, 3, n), 30.0 / 33, 90 / (33.0 * 33 * 34), 0, 1, true},
	} {
		m, v := moments(c.x)
		if se := math.Sqrt(c.vari / n); math.Abs(m-c.mean) > 5*se {
			t.Errorf("%s: mean %v, want %v (5 s.e. %.2g)", c.name, m, c.mean, 5*se)
		}
		if math.Abs(v-c.vari) > 0.02*c.vari {
			t.Errorf("%s: variance %v, want %v", c.name, v, c.vari)
		}
		if c.checkBounds && (slices.Min(c.x) < c.lo || slices.Max(c.x) > c.hi) {
			t.Errorf("%s: values outside [%v,%v]", c.name, c.lo, c.hi)
		}
	}
	var below int
	for range n {
		if g.Random() < 0.25 {
			below++
		}
	}
	if p := float64(below) / n; math.Abs(p-0.25) > 5*math.Sqrt(0.25*0.75/n) {
		t.Errorf("Random: P(<0.25) = %v", p)
	}
}
