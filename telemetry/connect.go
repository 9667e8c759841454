package telemetry

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// Connect opens the long-lived NATS connection a daemon (coordinator, worker)
// publishes telemetry on. It retries the first connect and reconnects forever,
// so a NATS server that starts later or restarts never stops training; name
// identifies the client in the server's connection list. The caller closes it.
func Connect(url, name string) (*nats.Conn, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", url, err)
	}
	return nc, nil
}
