//go:build !linux

package collective

import (
	"net"
	"time"
)

// pollLinks is the Linux progress engine (poll_linux.go); elsewhere every
// transport uses the goroutine path and none of these is called.
type pollLinks struct{ pairs []int }

func newPollLinks(*ring, net.Conn, net.Conn, []net.Conn) *pollLinks { return nil }

func (l *pollLinks) wake()                             {}
func (l *pollLinks) close()                            {}
func (l *pollLinks) readNotice(*[8]byte) error         { panic("collective: no progress engine off Linux") }
func (l *pollLinks) writeNotice([]byte, time.Duration) {}
func (r *ring) runPolled(*plan, time.Time) error       { panic("collective: no progress engine off Linux") }
