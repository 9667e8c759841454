package core

import (
	"fmt"
	"testing"

	"github.com/fmtrain/fmtrain/coordinator/api"
)

// benchState is a busy coordinator: 16 jobs of 8 workers each running.
func benchState(b *testing.B) *State {
	s := NewState(Config{})
	for j := range 16 {
		id := fmt.Sprintf("j%d", j)
		s.Step(JobSubmitted{JobID: id, Spec: testSpec(id, 8, 8, 64, 2, 100000, "cpu"), Revision: int64(j + 1), At: at(j)})
		for w := range 8 {
			s.Step(reg(fmt.Sprintf("w%d-%d", j, w), j))
		}
		if s.Jobs[id].State != api.JobRunning {
			b.Fatalf("job %s: %s", id, s.Jobs[id].State)
		}
	}
	return s
}

// BenchmarkStepProgress: one progress report (the most frequent event).
func BenchmarkStepProgress(b *testing.B) {
	s := benchState(b)
	b.ResetTimer()
	for i := range b.N {
		s.Step(rep("w3-0", "j3", 1, api.ReportProgress, int64(i+1), 100))
		if len(s.Outbox) > 1000 {
			s.Step(ActionsDone{Seq: s.ActionSeq})
		}
	}
}

// BenchmarkStepReform: a worker lost and the job re-formed (the expensive event).
func BenchmarkStepReform(b *testing.B) {
	for range b.N {
		b.StopTimer()
		s := benchState(b)
		b.StartTimer()
		s.Step(WorkerLost{WorkerID: "w7-3", Reason: "bench", At: at(200)})
	}
}

// BenchmarkAssignment: what every heartbeat reads.
func BenchmarkAssignment(b *testing.B) {
	s := benchState(b)
	b.ResetTimer()
	for range b.N {
		if a, _ := s.Assignment("w5-7"); a == nil {
			b.Fatal("no assignment")
		}
	}
}
