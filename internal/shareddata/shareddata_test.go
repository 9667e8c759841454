package shareddata

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPathFindsTestdata(t *testing.T) {
	p, err := Path("testdata", "flow", "README.md")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("reference README not at %s: %v", p, err)
	}
}

func TestEnvOverride(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvDir, dir)
	p, err := Path("x")
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(dir, "x") {
		t.Fatalf("got %s, want %s", p, filepath.Join(dir, "x"))
	}
}
