//go:build !amd64

package collective

// addVector has no vector version on this architecture.
func addVector(dst, src []float32) int { return 0 }
