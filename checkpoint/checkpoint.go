// Package checkpoint writes and reads training checkpoints: one directory
// per step (checkpoint_dir/step_00000100/) holding
//
//	model.safetensors      the weights under FM-DiT's parameter names (opens in Python's safetensors)
//	ema.safetensors        the EMA weights, same names (only with EMA)
//	optimizer.safetensors  AdamW's exp_avg and exp_avg_sq, flat, in parameter order
//	header.json            magic, version, step, data position, config, and every file's size and sha256
//
// A checkpoint is written into a temporary directory, each file fsynced,
// header.json last, then the directory is renamed into place and its parent
// fsynced: a crash or a full disk leaves the previous checkpoints untouched
// and never a directory that looks complete. Load verifies the header's own
// checksum and every file's size and sha256 and refuses a damaged checkpoint
// with an error naming the file.
//
// Functions are safe for concurrent use on different directories; one
// writer per checkpoint_dir.
package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Header identity.
const (
	Magic   = "fmtrain-checkpoint"
	Version = 1
)

// File names inside a checkpoint directory.
const (
	HeaderFile    = "header.json"
	WeightsFile   = "model.safetensors"
	EMAFile       = "ema.safetensors"
	OptimizerFile = "optimizer.safetensors"
)

// RNGScheme names how the flow RNG is restored: the stream of step s on rank
// r is derived from (seed, s, r), so the step and seed are its whole state
// (and a resume with another world size is still exact).
const RNGScheme = "fmtrain/per-step-pcg-v1"

// Param is one named tensor of a flat parameter buffer.
type Param struct {
	Name   string
	Shape  []int
	Offset int
}

// Size is the element count.
func (p Param) Size() int {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// State is everything a resumed run needs.
type State struct {
	Step         int64 // optimizer steps done
	DataPosition int64 // global samples consumed (step · global batch)
	Epoch        int   // epoch of the next sample
	Seed         uint64
	Spec         []byte          // the job spec YAML
	ModelConfig  json.RawMessage // the model's config (JSON)

	Layout   []Param   // names and places of Params' tensors
	Params   []float32 // the weights
	AdamM    []float32 // AdamW exp_avg (nil: no optimizer state)
	AdamV    []float32 // AdamW exp_avg_sq
	AdamStep int64
	EMA      []float32 // EMA weights (nil: no EMA)
}

// Header is header.json.
type Header struct {
	Magic        string              `json:"magic"`
	Version      int                 `json:"version"`
	Step         int64               `json:"step"`
	DataPosition int64               `json:"data_position"`
	Epoch        int                 `json:"epoch"`
	Seed         uint64              `json:"seed"`
	RNG          string              `json:"rng"`
	AdamStep     int64               `json:"adam_step"`
	NumParams    int                 `json:"num_params"`
	Spec         string              `json:"spec"`
	ModelConfig  json.RawMessage     `json:"model_config,omitempty"`
	Files        map[string]FileInfo `json:"files"`
	// Checksum is the sha256 of this header encoded with Checksum empty.
	Checksum string `json:"checksum"`
}

// FileInfo is one data file's size and sha256.
type FileInfo struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// DirName is the directory name of a step's checkpoint.
func DirName(step int64) string { return fmt.Sprintf("step_%08d", step) }

// StepOf parses a checkpoint directory name; ok is false for other names.
func StepOf(name string) (int64, bool) {
	s, ok := strings.CutPrefix(name, "step_")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0
}

// List returns the complete-looking checkpoints in dir (directories named
// step_N holding a header.json), oldest first.
func List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint: listing %s: %w", dir, err)
	}
	type ck struct {
		step int64
		path string
	}
	var cks []ck
	for _, e := range entries {
		step, ok := StepOf(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(p, HeaderFile)); err == nil {
			cks = append(cks, ck{step, p})
		}
	}
	sort.Slice(cks, func(i, j int) bool { return cks[i].step < cks[j].step })
	out := make([]string, len(cks))
	for i, c := range cks {
		out[i] = c.path
	}
	return out, nil
}

// Latest returns the newest checkpoint in dir that passes verification, or ""
// when there is none. A damaged newer checkpoint is skipped (and reported
// through the returned skipped list) rather than blocking the resume.
func Latest(dir string) (path string, skipped []error, err error) {
	all, err := List(dir)
	if err != nil {
		return "", nil, err
	}
	for i := len(all) - 1; i >= 0; i-- {
		if _, err := Verify(all[i]); err != nil {
			skipped = append(skipped, err)
			continue
		}
		return all[i], skipped, nil
	}
	return "", skipped, nil
}

// ReadHeader reads and checks path/header.json (magic, version, checksum).
func ReadHeader(path string) (*Header, error) {
	hp := filepath.Join(path, HeaderFile)
	raw, err := os.ReadFile(hp)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	var h Header
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("checkpoint: %s is corrupt: %w", hp, err)
	}
	if h.Magic != Magic {
		return nil, fmt.Errorf("checkpoint: %s is not an fmtrain checkpoint header (magic %q)", hp, h.Magic)
	}
	if h.Version != Version {
		return nil, fmt.Errorf("checkpoint: %s has version %d; this fmtrain reads version %d", hp, h.Version, Version)
	}
	want := h.Checksum
	sum, err := headerChecksum(h)
	if err != nil {
		return nil, err
	}
	if sum != want {
		return nil, fmt.Errorf("checkpoint: %s is corrupt: checksum %s, recorded %s", hp, sum, want)
	}
	return &h, nil
}

// Verify checks a checkpoint: its header and every file's size and sha256.
func Verify(path string) (*Header, error) {
	h, err := ReadHeader(path)
	if err != nil {
		return nil, err
	}
	for name, fi := range h.Files {
		if _, err := readVerified(path, name, fi); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func headerChecksum(h Header) (string, error) {
	h.Checksum = ""
	raw, err := json.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("checkpoint: encoding header: %w", err)
	}
	s := sha256.Sum256(raw)
	return hex.EncodeToString(s[:]), nil
}

// readVerified reads path/name and checks it against fi.
func readVerified(path, name string, fi FileInfo) ([]byte, error) {
	fp := filepath.Join(path, name)
	raw, err := os.ReadFile(fp)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if int64(len(raw)) != fi.Bytes {
		return nil, fmt.Errorf("checkpoint: %s is truncated or replaced: %d bytes, header says %d", fp, len(raw), fi.Bytes)
	}
	s := sha256.Sum256(raw)
	if got := hex.EncodeToString(s[:]); got != fi.SHA256 {
		return nil, fmt.Errorf("checkpoint: %s is corrupt: sha256 %s, header says %s", fp, got, fi.SHA256)
	}
	return raw, nil
}
