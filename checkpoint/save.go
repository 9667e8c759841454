package checkpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/fmtrain/fmtrain/safetensors"
)

// file is what Save writes through; tests substitute one that runs out of
// space.
type file interface {
	io.Writer
	Sync() error
	Close() error
}

var createFile = func(name string) (file, error) { return os.Create(name) }

// Save writes st as dir/step_<Step> atomically (see the package doc), then
// deletes all but the newest keepLast checkpoints (keepLast 0 keeps all) and
// leftovers of interrupted saves. It returns the checkpoint's path. On any
// error nothing of the new checkpoint remains and older ones are untouched.
func Save(ctx context.Context, dir string, st *State, keepLast int) (string, error) {
	if err := st.check(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	removeLeftovers(dir)
	final := filepath.Join(dir, DirName(st.Step))
	tmp, err := os.MkdirTemp(dir, "."+DirName(st.Step)+".tmp-")
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if err := writeAll(ctx, tmp, st); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("checkpoint: writing %s: %w", final, err)
	}
	// A checkpoint of the same step (a re-save after resume) is replaced.
	if _, err := os.Stat(final); err == nil {
		old := final + ".old"
		os.RemoveAll(old)
		if err := os.Rename(final, old); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("checkpoint: replacing %s: %w", final, err)
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if keepLast > 0 {
		if err := prune(dir, keepLast); err != nil {
			return final, err
		}
	}
	return final, nil
}

func (st *State) check() error {
	n := len(st.Params)
	if n == 0 || len(st.Layout) == 0 {
		return fmt.Errorf("checkpoint: state has no parameters")
	}
	end := 0
	for _, p := range st.Layout {
		if p.Offset != end {
			return fmt.Errorf("checkpoint: layout is not contiguous at %q (offset %d, expected %d)", p.Name, p.Offset, end)
		}
		end += p.Size()
	}
	if end != n {
		return fmt.Errorf("checkpoint: layout covers %d values, params hold %d", end, n)
	}
	if (st.AdamM == nil) != (st.AdamV == nil) || (st.AdamM != nil && (len(st.AdamM) != n || len(st.AdamV) != n)) {
		return fmt.Errorf("checkpoint: optimizer moments (%d, %d) do not match %d params", len(st.AdamM), len(st.AdamV), n)
	}
	if st.EMA != nil && len(st.EMA) != n {
		return fmt.Errorf("checkpoint: EMA holds %d values for %d params", len(st.EMA), n)
	}
	return nil
}

func writeAll(ctx context.Context, tmp string, st *State) error {
	files := map[string]FileInfo{}
	meta := map[string]string{"format": "fmtrain", "step": fmt.Sprint(st.Step)}
	if len(st.ModelConfig) > 0 {
		meta["config"] = string(st.ModelConfig)
	}
	write := func(name string, tensors []safetensors.Tensor, meta map[string]string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := writeFile(filepath.Join(tmp, name), func(w io.Writer) error {
			return safetensors.Write(w, tensors, meta)
		})
		if err != nil {
			return err
		}
		files[name] = fi
		return nil
	}
	weights, err := named(st.Layout, st.Params)
	if err != nil {
		return err
	}
	if err := write(WeightsFile, weights, meta); err != nil {
		return err
	}
	if st.EMA != nil {
		ema, err := named(st.Layout, st.EMA)
		if err != nil {
			return err
		}
		if err := write(EMAFile, ema, meta); err != nil {
			return err
		}
	}
	if st.AdamM != nil {
		m, err := safetensors.FromFloat32("exp_avg", safetensors.F32, []int{len(st.AdamM)}, st.AdamM)
		if err != nil {
			return err
		}
		v, err := safetensors.FromFloat32("exp_avg_sq", safetensors.F32, []int{len(st.AdamV)}, st.AdamV)
		if err != nil {
			return err
		}
		if err := write(OptimizerFile, []safetensors.Tensor{m, v}, map[string]string{"step": fmt.Sprint(st.AdamStep)}); err != nil {
			return err
		}
	}
	h := Header{
		Magic: Magic, Version: Version, Step: st.Step, DataPosition: st.DataPosition, Epoch: st.Epoch,
		Seed: st.Seed, RNG: RNGScheme, AdamStep: st.AdamStep, NumParams: len(st.Params),
		Spec: string(st.Spec), ModelConfig: st.ModelConfig, Files: files,
	}
	sum, err := headerChecksum(h)
	if err != nil {
		return err
	}
	h.Checksum = sum
	raw, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding header: %w", err)
	}
	if _, err := writeFile(filepath.Join(tmp, HeaderFile), func(w io.Writer) error {
		_, err := w.Write(append(raw, '\n'))
		return err
	}); err != nil {
		return err
	}
	return syncDir(tmp)
}

// named cuts a flat buffer into named F32 tensors.
func named(layout []Param, buf []float32) ([]safetensors.Tensor, error) {
	out := make([]safetensors.Tensor, len(layout))
	for i, p := range layout {
		t, err := safetensors.FromFloat32(p.Name, safetensors.F32, p.Shape, buf[p.Offset:p.Offset+p.Size()])
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}

// hashWriter hashes and counts what passes through it.
type hashWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (hw *hashWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.n += int64(n)
	return n, err
}

func writeFile(path string, fill func(io.Writer) error) (FileInfo, error) {
	f, err := createFile(path)
	if err != nil {
		return FileInfo{}, err
	}
	hw := &hashWriter{w: f, h: sha256.New()}
	err = fill(hw)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return FileInfo{}, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return FileInfo{Bytes: hw.n, SHA256: hex.EncodeToString(hw.h.Sum(nil))}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeLeftovers deletes temporary directories of interrupted saves.
func removeLeftovers(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, ".step_") && strings.Contains(n, ".tmp-") {
			os.RemoveAll(filepath.Join(dir, n))
		}
	}
}

func prune(dir string, keep int) error {
	all, err := List(dir)
	if err != nil {
		return err
	}
	var errs []error
	for i := 0; i < len(all)-keep; i++ {
		if err := os.RemoveAll(all[i]); err != nil {
			errs = append(errs, fmt.Errorf("checkpoint: pruning %s: %w", all[i], err))
		}
	}
	return errors.Join(errs...)
}
