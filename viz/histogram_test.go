package viz

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
)

func TestBins(t *testing.T) {
	bins, outside := Bins([]float64{0, 0.1, 0.5, 0.99, 1, 1.5, -1}, 0, 1, 4)
	counts := []int{2, 0, 1, 2} // 1 falls in the last, closed bin
	for i, b := range bins {
		if b.Count != counts[i] {
			t.Errorf("bin %d [%v,%v): %d, want %d", i, b.Lo, b.Hi, b.Count, counts[i])
		}
	}
	if outside != 2 {
		t.Errorf("outside = %d, want 2", outside)
	}
}

func TestHistogramPNG(t *testing.T) {
	var buf bytes.Buffer
	vals := []float64{0.1, 0.2, 0.2, 0.875, 0.875, 0.875, 0.9}
	if err := Histogram(&buf, vals, HistogramOptions{Title: "σ", XLabel: "sigma", Lo: 0, Hi: 1, Bins: 20}); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 300 || b.Dy() < 200 {
		t.Errorf("image %v too small", b)
	}
	if err := Histogram(&buf, nil, HistogramOptions{}); err == nil {
		t.Error("empty histogram accepted")
	}
}

func TestTextHistogram(t *testing.T) {
	out := TextHistogram([]float64{0.1, 0.1, 0.1, 0.1, 0.6, 0.6}, 0, 1, 2, 8)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	if !strings.Contains(lines[0], "████████") || !strings.Contains(lines[0], "66.67%") {
		t.Errorf("first bin line %q: want a full 8-cell bar and 66.67%%", lines[0])
	}
	if !strings.HasPrefix(lines[1], "[0.500, 1.000]") || strings.Count(lines[1], "█") != 4 || !strings.Contains(lines[1], "33.33%") {
		t.Errorf("second bin line %q: want a 4-cell bar (half of the first) and 33.33%%", lines[1])
	}
}
