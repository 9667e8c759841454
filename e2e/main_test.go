package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/fmtrain/fmtrain/worker"
)

// workerEnv marks a re-executed test binary that must run as fm-worker.
const workerEnv = "FMTRAIN_E2E_RUN_AS_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		cfg, err := worker.ParseFlags(os.Args[1:], os.Stderr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := worker.MainWithSignals(context.Background(), cfg, cfg.Logger(os.Stderr)); err != nil {
			fmt.Fprintln(os.Stderr, "fm-worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
