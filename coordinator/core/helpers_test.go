package core

import (
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/internal/coordtest"
)

// testSpec is a valid job spec with the fields the coordinator decides on.
func testSpec(name string, minW, maxW, global, local, maxSteps int, device string) string {
	return coordtest.JobSpec(name, device, minW, maxW, global, local, maxSteps)
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func worker(id string) api.RegisterRequest {
	return api.RegisterRequest{WorkerID: id, Host: "h", Device: "cpu", CollectiveAddr: id + ":7100"}
}

func stopped(w, job string, gen uint64, sec int) MemberStopped {
	return MemberStopped{JobID: job, Generation: gen, WorkerID: w, At: at(sec)}
}
