// Package shareddata locates the project's read-only shared material
// (../shared from the repository root: design documents, reference vectors,
// benchmark configs) for tests and tools, wherever they run from.
package shareddata

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// EnvDir overrides the location of the shared folder.
const EnvDir = "FMTRAIN_SHARED"

// Dir returns the shared folder: $FMTRAIN_SHARED when set, else the folder
// "shared" next to the repository root (found by walking up from the working
// directory to the directory holding go.mod).
func Dir() (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("shareddata: working directory: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			shared := filepath.Join(filepath.Dir(d), "shared")
			if _, err := os.Stat(shared); err != nil {
				return "", fmt.Errorf("shareddata: %s not found next to repository root %s (set %s): %w", shared, d, EnvDir, err)
			}
			return shared, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("shareddata: no go.mod above " + wd + " (set " + EnvDir + ")")
		}
	}
}

// Path joins elem onto Dir.
func Path(elem ...string) (string, error) {
	d, err := Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(append([]string{d}, elem...)...), nil
}
