package main

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
)

// defaultNATSURL is where fmctl looks for NATS unless --nats-url or
// FMTRAIN_NATS_URL says otherwise.
const defaultNATSURL = "nats://127.0.0.1:4222"

// addNATSFlag adds --nats-url to cmd and returns where its value lands.
func addNATSFlag(cmd *cobra.Command) *string {
	return addEnvFlag(cmd, "nats-url", "FMTRAIN_NATS_URL", defaultNATSURL, "NATS server carrying fmtrain telemetry")
}

// connectNATS connects to the telemetry server; the caller closes the
// connection.
func connectNATS(url string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name("fmctl"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to NATS at %s (set --nats-url or FMTRAIN_NATS_URL): %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("JetStream at %s: %w", url, err)
	}
	return nc, js, nil
}
