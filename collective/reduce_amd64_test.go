package collective

// setVector switches the AVX2 path for a test and returns the undo.
func setVector(on bool) func() {
	old := useAVX2
	useAVX2 = on && old
	return func() { useAVX2 = old }
}
