package kernels

// Exp32 and Tanh32 expose the fast float32 math to the external tests.
var (
	Exp32      = exp32
	GELU32     = gelu32
	GELUGrad32 = geluGrad32
)
