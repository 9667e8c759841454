//go:build !linux

package collective

import (
	"net"
	"time"
)

// pollLinks is the Linux progress engine (poll_linux.go); elsewhere every
// transport uses the goroutine path.
type pollLinks struct{}

func newPollLinks(_ *ring, next, prev net.Conn) *pollLinks { return nil }

func (r *ring) runPolled(p *plan, deadline time.Time) error {
	panic("collective: progress engine used off Linux")
}
