package kernels

// Exp32 and Tanh32 expose the fast float32 math to the external tests.
var (
	Exp32      = exp32
	GELU32     = gelu32
	GELUGrad32 = geluGrad32
)

// SetAVX2 switches the assembly loops on or off and returns the old setting.
func SetAVX2(on bool) bool {
	old := useAVX2
	useAVX2 = on
	return old
}
