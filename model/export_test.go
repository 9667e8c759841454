package model

// Intermediates exposes the activations that the reference vectors store
// as inter.* (the residual stream is updated in place, so its per-block
// values are not kept).
func Intermediates(m *Model) map[string][]float32 {
	a := &m.act
	return map[string][]float32{
		"inter.patches": a.patches, "inter.pos": a.pos, "inter.temb": a.temb,
		"inter.c": a.c, "inter.y": a.y, "inter.o": a.o,
	}
}
