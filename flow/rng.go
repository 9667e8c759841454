package flow

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// RNG is every random draw the pipeline and its adapters make, one method per
// primitive NeMo calls. Step calls them in exactly the order of
// flow-pipeline.md §8.2, so a test can replay the draws NeMo recorded:
//
//  1. Random: the task-type draw (Python random.random), video batches only
//  2. the sampler's draws: Rand(1) for the whole-batch mix decision, then
//     Rand(B), Normal(mean, std, B) or Beta(α, β, B)
//  3. Randn(numel(latents)): the noise
//  4. adapter draws: Rand(B) (Flux, Flux2 CFG), Random (QwenImage, always),
//     Randn(numel(audio)) (LTX2)
//
// An RNG is used by one goroutine at a time.
type RNG interface {
	// Random is Python's random.random(): a float64 in [0, 1).
	Random() float64
	// Rand is torch.rand(n): n float32 in [0, 1).
	Rand(n int) []float32
	// Normal is torch.normal(mean, std, (n,)): n float32 values mean + std·z.
	Normal(mean, std float64, n int) []float32
	// Randn is torch.randn_like: n float32 standard normal values.
	Randn(n int) []float32
	// Beta is Beta(alpha, beta).sample((n,)): n float32 in [0, 1].
	Beta(alpha, beta float64, n int) []float32
}

// Generator is fmtrain's production RNG: a PCG stream per (seed, rank), so
// every data-parallel rank draws differently and reproducibly (NeMo seeds
// each rank with seed + rank). Normals come from math/rand/v2's ziggurat,
// Beta from two Marsaglia–Tsang gamma draws. Its whole state is the PCG
// state, saved and restored with MarshalBinary/UnmarshalBinary so a resumed
// run draws exactly what the uninterrupted run would have.
//
// A Generator is used by one goroutine at a time.
type Generator struct {
	pcg *rand.PCG
	r   *rand.Rand
}

var _ RNG = (*Generator)(nil)

// NewRNG returns the generator of the given rank for a job seed.
func NewRNG(seed uint64, rank int) *Generator {
	// Two 64-bit words: the seed, and the rank pushed through a splitmix
	// step so that nearby (seed, rank) pairs start far apart.
	pcg := rand.NewPCG(seed, splitmix64(uint64(rank)+0x9E3779B97F4A7C15))
	return &Generator{pcg: pcg, r: rand.New(pcg)}
}

func splitmix64(z uint64) uint64 {
	z += 0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// generatorMagic versions the serialised state.
const generatorMagic = "fmrng1:"

// MarshalBinary returns the generator state (for checkpoints).
func (g *Generator) MarshalBinary() ([]byte, error) {
	b, err := g.pcg.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("flow: saving rng state: %w", err)
	}
	return append([]byte(generatorMagic), b...), nil
}

// UnmarshalBinary restores a state written by MarshalBinary.
func (g *Generator) UnmarshalBinary(data []byte) error {
	if len(data) < len(generatorMagic) || string(data[:len(generatorMagic)]) != generatorMagic {
		return errors.New("flow: restoring rng state: not an fmtrain rng state (bad magic)")
	}
	pcg := &rand.PCG{}
	if err := pcg.UnmarshalBinary(data[len(generatorMagic):]); err != nil {
		return fmt.Errorf("flow: restoring rng state: %w", err)
	}
	g.pcg, g.r = pcg, rand.New(pcg)
	return nil
}

// Random implements RNG.
func (g *Generator) Random() float64 { return g.r.Float64() }

// uniform32 is a float32 in [0,1) with 24 random bits, as torch.rand.
func (g *Generator) uniform32() float32 {
	return float32(g.pcg.Uint64()>>40) * (1.0 / (1 << 24))
}

// Rand implements RNG.
func (g *Generator) Rand(n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = g.uniform32()
	}
	return out
}

// Normal implements RNG.
func (g *Generator) Normal(mean, std float64, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(mean + std*g.r.NormFloat64())
	}
	return out
}

// Randn implements RNG.
func (g *Generator) Randn(n int) []float32 { return g.Normal(0, 1, n) }

// Beta implements RNG: X/(X+Y) with X ~ Gamma(alpha), Y ~ Gamma(beta).
func (g *Generator) Beta(alpha, beta float64, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		x := g.gamma(alpha)
		y := g.gamma(beta)
		out[i] = float32(x / (x + y))
	}
	return out
}

// gamma draws Gamma(a, 1) by Marsaglia and Tsang (2000), "A simple method
// for generating gamma variables"; for a < 1 it boosts with U^(1/a).
func (g *Generator) gamma(a float64) float64 {
	if a < 1 {
		u := g.r.Float64()
		for u == 0 {
			u = g.r.Float64()
		}
		return g.gamma(a+1) * math.Pow(u, 1/a)
	}
	d := a - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := g.r.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := g.r.Float64()
		if u < 1-0.0331*x*x*x*x {
			return d * v
		}
		if math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}
