//go:build !amd64

package collective

func setVector(bool) func() { return func() {} }
