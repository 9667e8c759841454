//go:build !linux

package bench

import "errors"

// usableCPUs is unknown here, so ranks are never bound.
func usableCPUs() []int { return nil }

func bindProcess(int) error { return errors.New("bench: binding ranks to CPUs needs Linux") }
