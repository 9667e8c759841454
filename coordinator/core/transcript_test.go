package core

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/coordinator/api"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt with the actions Step returns now (review the diff before committing)")

// TestTranscripts runs each testdata/*.txt script through Step and compares
// the printed actions with the ones recorded in the file. A script line is a
// command; the indented lines after it are what Step returned. Lines starting
// with # are comments. Every command advances the clock by one second.
//
// Commands:
//
//	submit <job> min=<n> max=<n> global=<n> local=<n> [steps=<n>] [device=cpu|cuda|auto]
//	submit-raw <job> <yaml with \n for newlines>
//	cancel <job>
//	register <worker> [device=cuda:0]
//	lost <worker> <reason...>
//	report <worker> <job> <gen> progress|checkpoint|finished <step>
//	report <worker> <job> <gen> failed|fatal <error...>
//	reform-due <job> <gen>
//	stopped <worker> <job> <gen>
//	ack <seq>
//	assignment <worker>
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts in testdata: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got := replay(t, string(data))
			if *update {
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != string(data) {
				t.Errorf("%s differs from what Step does now (run with -update and review the diff):\n%s", file, diff(string(data), got))
			}
		})
	}
}

// replay re-runs the commands of a transcript and renders it anew.
func replay(t *testing.T, script string) string {
	s := NewState(Config{MaxRestarts: 3})
	var out strings.Builder
	clock, rev := 0, int64(0)
	sc := bufio.NewScanner(strings.NewReader(script))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "  ") {
			continue // recorded output, regenerated below
		}
		out.WriteString(line + "\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		clock++
		now := at(clock)
		f := strings.Fields(line)
		var ev Event
		switch f[0] {
		case "submit":
			kv := keyValues(t, f[2:])
			rev++
			ev = JobSubmitted{JobID: f[1], Revision: rev, At: now, Spec: testSpec(f[1],
				atoi(t, kv["min"]), atoi(t, kv["max"]), atoi(t, kv["global"]), atoi(t, kv["local"]),
				atoiOr(t, kv["steps"], 100), or(kv["device"], "cpu"))}
		case "submit-raw":
			rev++
			ev = JobSubmitted{JobID: f[1], Revision: rev, At: now,
				Spec: strings.ReplaceAll(strings.Join(f[2:], " "), `\n`, "\n")}
		case "cancel":
			rev++
			ev = JobCancelled{JobID: f[1], Reason: "cancelled by user", Revision: rev, At: now}
		case "register":
			w := worker(f[1])
			if len(f) > 2 {
				w.Device = keyValues(t, f[2:])["device"]
			}
			ev = WorkerRegistered{Worker: w, At: now}
		case "lost":
			ev = WorkerLost{WorkerID: f[1], Reason: strings.Join(f[2:], " "), At: now}
		case "report":
			gen, _ := strconv.ParseUint(f[3], 10, 64)
			r := api.Report{WorkerID: f[1], JobID: f[2], Generation: gen, Kind: api.ReportKind(f[4])}
			switch r.Kind {
			case "failed", "fatal":
				r.Kind, r.Fatal, r.Error = api.ReportFailed, f[4] == "fatal", strings.Join(f[5:], " ")
			case api.ReportCheckpoint:
				r.Step = int64(atoi(t, f[5]))
				r.Checkpoint = &api.Checkpoint{Path: fmt.Sprintf("/ckpt/%s/step_%d", f[2], r.Step), Checksum: "crc:1", Step: r.Step, SamplesSeen: r.Step * 12}
			default:
				r.Step = int64(atoi(t, f[5]))
			}
			ev = Reported{Report: r, At: now}
		case "reform-due":
			gen, _ := strconv.ParseUint(f[2], 10, 64)
			ev = ReformDue{JobID: f[1], Generation: gen, At: now}
		case "stopped":
			gen, _ := strconv.ParseUint(f[3], 10, 64)
			ev = MemberStopped{WorkerID: f[1], JobID: f[2], Generation: gen, At: now}
		case "ack":
			ev = ActionsDone{Seq: uint64(atoi(t, f[1]))}
		case "assignment":
			a, known := s.Assignment(f[1])
			switch {
			case !known:
				out.WriteString("  unknown worker\n")
			case a == nil:
				out.WriteString("  none\n")
			default:
				fmt.Fprintf(&out, "  job=%s gen=%d rank=%d/%d peers=%v start_step=%d start_sample=%d accum=%d resume=%s\n",
					a.JobID, a.Generation, a.Rank, a.WorldSize, a.Peers, a.StartStep, a.Data.StartSample, a.GradAccum, ckptString(a.ResumeFrom))
			}
			continue
		default:
			t.Fatalf("unknown transcript command %q", line)
		}
		if r, ok := ev.(Reported); ok && !s.ReportIsCurrent(r.Report) {
			out.WriteString("  (stale report ignored)\n")
		}
		for _, a := range s.Step(ev) {
			out.WriteString("  " + formatAction(a) + "\n")
		}
		if _, ok := ev.(ActionsDone); ok {
			fmt.Fprintf(&out, "  outbox: %d pending\n", len(s.Outbox))
		}
	}
	return out.String()
}

func formatAction(a Action) string {
	switch a.Kind {
	case WriteJobStatus:
		st := a.Status
		s := fmt.Sprintf("%d status %s %s step=%d gen=%d", a.Seq, st.JobID, st.State, st.Step, st.Generation)
		if len(st.Workers) > 0 {
			s += fmt.Sprintf(" workers=%v accum=%d", st.Workers, st.GradAccum)
		}
		if st.LastCheckpoint != nil {
			s += " ckpt=" + ckptString(st.LastCheckpoint)
		}
		if st.Restarts > 0 {
			s += fmt.Sprintf(" restarts=%d", st.Restarts)
		}
		if st.Error != "" {
			s += fmt.Sprintf(" error=%q", firstLine(st.Error))
		}
		return s
	case PublishEvent:
		e := a.Event
		s := fmt.Sprintf("%d event %s %s gen=%d step=%d", a.Seq, e.Job, e.Kind, e.Generation, e.Step)
		if e.Worker != "" {
			s += " worker=" + e.Worker
		}
		if e.Rank != nil {
			s += fmt.Sprintf(" rank=%d", *e.Rank)
		}
		if len(e.Workers) > 0 {
			s += fmt.Sprintf(" workers=%v", e.Workers)
		}
		if e.Checkpoint != "" {
			s += " ckpt=" + e.Checkpoint
		}
		if e.Detail != "" {
			s += " " + e.Detail
		}
		if e.Error != "" {
			s += fmt.Sprintf(" error=%q", firstLine(e.Error))
		}
		return s
	}
	return a.Kind.String()
}

func ckptString(c *api.Checkpoint) string {
	if c == nil {
		return "none"
	}
	return fmt.Sprintf("%s@%d", c.Path, c.Step)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func keyValues(t *testing.T, fields []string) map[string]string {
	kv := map[string]string{}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			t.Fatalf("transcript: %q is not key=value", f)
		}
		kv[k] = v
	}
	return kv
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("transcript: %q is not a number", s)
	}
	return n
}

func atoiOr(t *testing.T, s string, def int) int {
	if s == "" {
		return def
	}
	return atoi(t, s)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// diff shows the first differing line of two renderings.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  file: %s\n  now:  %s", i+1, wl, gl)
		}
	}
	return ""
}
