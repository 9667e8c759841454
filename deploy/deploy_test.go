// Package deploy_test checks the deployment files that are not Go: the Slurm
// batch script, the shell scripts and the Slurm stand-ins of the multi-host
// test with `bash -n` and shellcheck, and the
// systemd units with `systemd-analyze verify`. The tools come from Debian
// (`apt-get install shellcheck systemd`; .ci/run installs shellcheck).
package deploy_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fmtrain/fmtrain/jobspec"
)

func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed to check the deploy files: apt-get install %s", name, pkg)
	}
	return path
}

func shellScripts(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		stub := filepath.Base(filepath.Dir(p)) == "slurmstub" // srun and scontrol stand-ins
		if !d.IsDir() && (strings.HasSuffix(p, ".sh") || strings.HasSuffix(p, ".sbatch") || stub) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found only %v: the Slurm script and the shell scripts should be here", files)
	}
	return files
}

func TestShellScripts(t *testing.T) {
	shellcheck := requireTool(t, "shellcheck", "shellcheck")
	for _, f := range shellScripts(t) {
		if out, err := exec.Command("bash", "-n", f).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", f, err, out)
		}
		if out, err := exec.Command(shellcheck, "--shell=bash", "--severity=style", f).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", f, err, out)
		}
	}
}

// TestShellcheckCatchesMistakes proves the check above can fail.
func TestShellcheckCatchesMistakes(t *testing.T) {
	shellcheck := requireTool(t, "shellcheck", "shellcheck")
	bad := filepath.Join(t.TempDir(), "bad.sh")
	if err := os.WriteFile(bad, []byte("#!/usr/bin/env bash\nrm -rf $dir/*\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(shellcheck, "--shell=bash", bad).CombinedOutput(); err == nil {
		t.Fatalf("shellcheck accepted an unquoted rm -rf $dir/*:\n%s", out)
	}
}

// verifyUnits copies the units into a temporary directory, pointing their
// /usr/local/bin programs at executable stand-ins (verify checks that the
// commands exist), and runs systemd-analyze verify on them; any diagnostic
// fails. A template unit is verified through an instance name.
func verifyUnits(t *testing.T, units map[string]string) (string, error) {
	t.Helper()
	analyze := requireTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	stubs := filepath.Join(dir, "bin")
	if err := os.Mkdir(stubs, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, prog := range []string{"fm-coordinator", "fm-worker"} {
		if err := os.WriteFile(filepath.Join(stubs, prog), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var args []string
	for name, text := range units {
		text = strings.ReplaceAll(text, "/usr/local/bin/", stubs+"/")
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "./"+name)
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	if err == nil && len(strings.TrimSpace(string(out))) > 0 {
		err = errors.New("diagnostics printed") // a warning is a mistake too
	}
	return string(out), err
}

func TestSystemdUnits(t *testing.T) {
	units := map[string]string{}
	for file, as := range map[string]string{
		"systemd/fm-coordinator.service": "fm-coordinator.service",
		"systemd/fm-worker@.service":     "fm-worker@3.service",
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		units[as] = string(b)
	}
	if out, err := verifyUnits(t, units); err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The worker template must address its GPU through the instance name.
	if w := units["fm-worker@3.service"]; !strings.Contains(w, "FMTRAIN_GPU=%i") || !strings.Contains(w, `--device="cuda:$FMTRAIN_GPU"`) {
		t.Error("fm-worker@.service: the instance (%i) must select the GPU (--device=cuda:%i)")
	}
}

func TestSystemdVerifyCatchesMistakes(t *testing.T) {
	b, err := os.ReadFile("systemd/fm-coordinator.service")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "Restart=on-failure", "Restart=sometimes", 1)
	if out, err := verifyUnits(t, map[string]string{"bad.service": bad}); err == nil {
		t.Fatalf("systemd-analyze verify accepted Restart=sometimes:\n%s", out)
	}
}

// The compose cluster's demo job is a valid spec whose paths are on the
// shared volume the workers mount.
func TestComposeDemoJob(t *testing.T) {
	raw, err := os.ReadFile("docker/demo-job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := jobspec.Parse(raw)
	if err != nil {
		t.Fatalf("docker/demo-job.yaml: %v", err)
	}
	for _, p := range []string{spec.Data.Manifest, spec.Checkpoint.CheckpointDir, spec.Sample.Prompts} {
		if !strings.HasPrefix(p, "/shared/") {
			t.Errorf("docker/demo-job.yaml: path %q is not on the shared volume (/shared)", p)
		}
	}
	for w := spec.MinWorkers; w <= spec.MaxWorkers; w++ {
		if _, err := spec.StepScheduler.Accumulation(w); err != nil {
			t.Errorf("docker/demo-job.yaml with %d workers: %v", w, err)
		}
	}
}
