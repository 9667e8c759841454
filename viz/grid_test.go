package viz

import (
	"bytes"
	"image/color"
	"image/png"
	"io"
	"os"
	"testing"
)

func TestGridPixels(t *testing.T) {
	// Two 2×2 images: all red, and a white top-left pixel on black.
	imgs := []float32{
		1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1,
		1, -1, -1, -1, 1, -1, -1, -1, 1, -1, -1, -1,
	}
	var buf bytes.Buffer
	if err := Grid(&buf, imgs, 2, 2, 2, GridOptions{Cols: 1, Scale: 3}); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	// Row 0 starts at (2,2); row 1 at (2, 2+6+2).
	at := func(x, y int) color.RGBA { return color.RGBAModel.Convert(img.At(x, y)).(color.RGBA) }
	if c := at(2, 2); c != (color.RGBA{255, 0, 0, 255}) {
		t.Errorf("first image pixel %v, want red", c)
	}
	if c := at(2+2, 10+2); c != (color.RGBA{255, 255, 255, 255}) {
		t.Errorf("second image top-left %v, want white", c)
	}
	if c := at(2+4, 10+4); c != (color.RGBA{0, 0, 0, 255}) {
		t.Errorf("second image bottom-right %v, want black", c)
	}
	if err := Grid(&buf, imgs[:5], 2, 2, 2, GridOptions{}); err == nil {
		t.Error("accepted a short buffer")
	}
}

func TestGridLabels(t *testing.T) {
	imgs := make([]float32, 2*3*4*4)
	var plain, labelled bytes.Buffer
	if err := Grid(&plain, imgs, 2, 4, 4, GridOptions{Cols: 1}); err != nil {
		t.Fatal(err)
	}
	if err := Grid(&labelled, imgs, 2, 4, 4, GridOptions{Cols: 1, Labels: []string{"a red circle", "a blue cross"}}); err != nil {
		t.Fatal(err)
	}
	a, _ := png.Decode(&plain)
	b, _ := png.Decode(&labelled)
	if b.Bounds().Dx() <= a.Bounds().Dx() {
		t.Errorf("labels did not widen the grid: %v vs %v", b.Bounds(), a.Bounds())
	}
}

func TestCurves(t *testing.T) {
	var buf bytes.Buffer
	s := []Series{
		{Name: "loss", X: []float64{1, 2, 3}, Y: []float64{1, 0.5, 0.25}, LogY: true},
		{Name: "lr", X: []float64{1, 2, 3}, Y: []float64{0, 1e-4, 1e-4}},
	}
	if err := Curves(&buf, "demo", s); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dy() <= img.Bounds().Dx()/2 {
		t.Errorf("two stacked panels expected, got %v", img.Bounds())
	}
	if err := Curves(&buf, "x", []Series{{Name: "bad", X: []float64{1}, Y: nil}}); err == nil {
		t.Error("accepted mismatched series")
	}
	if err := Curves(&buf, "x", nil); err == nil {
		t.Error("accepted no series")
	}
}

func TestSavePNG(t *testing.T) {
	path := t.TempDir() + "/g.png"
	err := SavePNG(path, func(w io.Writer) error {
		return Grid(w, make([]float32, 3*2*2), 1, 2, 2, GridOptions{})
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatal(err)
	}
}
