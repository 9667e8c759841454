package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Job is what the parent hands each rank process.
type Job struct {
	Rank   int      `json:"rank"`
	Addrs  []string `json:"addrs"`
	Config Config   `json:"config"`
	// CPU is the CPU the rank binds its process to, or -1.
	CPU int `json:"cpu"`
}

// Launcher builds the command for one rank process; the command must run
// Worker with its stdin and stdout connected to the parent (fmctl runs
// itself as "fmctl bench allreduce-rank").
type Launcher func(ctx context.Context, rank int) *exec.Cmd

// addrTimeout bounds the wait for a rank process to start listening.
const addrTimeout = 30 * time.Second

// Run starts cfg.Ranks processes, runs the benchmark and returns rank 0's
// results, one per size. Every process is gone when Run returns. Rank
// processes' stderr goes to stderr.
func Run(ctx context.Context, cfg Config, launch Launcher, stderr io.Writer) ([]Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type proc struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines *bufio.Scanner
	}
	stderr = &lockedWriter{w: stderr} // shared by every rank's copier goroutine
	procs := make([]proc, cfg.Ranks)
	defer func() {
		for _, p := range procs {
			if p.cmd != nil && p.cmd.Process != nil {
				_ = p.cmd.Process.Kill()
				_ = p.cmd.Wait()
			}
		}
	}()
	for r := range procs {
		cmd := launch(ctx, r)
		cmd.Stderr = stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, fmt.Errorf("bench: rank %d stdin: %w", r, err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, fmt.Errorf("bench: rank %d stdout: %w", r, err)
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("bench: starting rank %d (%s): %w", r, cmd.Path, err)
		}
		lines := bufio.NewScanner(stdout)
		lines.Buffer(make([]byte, 64<<10), 1<<20)
		procs[r] = proc{cmd: cmd, stdin: stdin, lines: lines}
	}

	addrs := make([]string, cfg.Ranks)
	timer := time.AfterFunc(addrTimeout, cancel)
	for r, p := range procs {
		line, err := nextLine(p.lines)
		if err != nil || !strings.HasPrefix(line, "addr ") {
			return nil, fmt.Errorf("bench: rank %d did not report its address (got %q): %v", r, line, err)
		}
		addrs[r] = strings.TrimPrefix(line, "addr ")
	}
	timer.Stop()
	var cpus []int
	if cfg.Bind {
		if cpus = usableCPUs(); len(cpus) < cfg.Ranks {
			cpus = nil // oversubscribed: let the scheduler share them out
		}
	}
	for r, p := range procs {
		job := Job{Rank: r, Addrs: addrs, Config: cfg, CPU: -1}
		if cpus != nil {
			job.CPU = cpus[r]
		}
		line, _ := json.Marshal(job)
		if _, err := fmt.Fprintf(p.stdin, "%s\n", line); err != nil {
			return nil, fmt.Errorf("bench: sending rank %d its job: %w", r, err)
		}
	}

	// Drain the other ranks' output so they never block on a full pipe.
	var drain sync.WaitGroup
	for _, p := range procs[1:] {
		drain.Go(func() {
			for p.lines.Scan() {
			}
		})
	}
	var results []Result
	for {
		line, err := nextLine(procs[0].lines)
		if err != nil {
			return nil, fmt.Errorf("bench: rank 0 stopped before finishing: %w", errors.Join(err, procs[0].cmd.Wait()))
		}
		if line == "done" {
			break
		}
		var res Result
		if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "result ")), &res); err != nil {
			return nil, fmt.Errorf("bench: rank 0 said %q: %w", line, err)
		}
		results = append(results, res)
	}
	drain.Wait()
	var errs []error
	for r, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("bench: rank %d: %w", r, err))
		}
		procs[r].cmd = nil
	}
	return results, errors.Join(errs...)
}

func nextLine(s *bufio.Scanner) (string, error) {
	if s.Scan() {
		return s.Text(), nil
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	return "", io.EOF
}

// lockedWriter serialises writes from several processes' output copiers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
