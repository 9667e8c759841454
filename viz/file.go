package viz

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// SavePNG writes what draw produces (Grid, Curves, Histogram) to path,
// through a temporary file renamed into place, so a reader never sees a
// partial image.
func SavePNG(path string, draw func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("viz: %w", err)
	}
	defer os.Remove(f.Name())
	if err := draw(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("viz: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("viz: %w", err)
	}
	return nil
}
