// Command fm-worker runs one fmtrain worker: one per GPU (or one on a CPU
// host). It registers with the coordinator, trains the generations it is
// assigned and publishes metrics and logs on NATS. SIGTERM, SIGINT or SIGUSR1
// drains it (finish the current step, leave, exit 0); a second signal aborts.
//
// Every flag can also be set as FMTRAIN_<FLAG> (e.g. FMTRAIN_NATS_URL);
// `fm-worker -h` lists them. main only wires; the worker lives in package
// worker.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/fmtrain/fmtrain/worker"
)

func main() {
	cfg, err := worker.ParseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := cfg.Logger(os.Stderr)
	if err := worker.MainWithSignals(context.Background(), cfg, log); err != nil {
		log.Error("fm-worker failed", "err", err)
		os.Exit(1)
	}
}
