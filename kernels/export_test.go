package kernels

// Exp32 and Tanh32 expose the fast float32 math to the external tests.
var (
	Exp32  = exp32
	Tanh32 = tanh32
)
