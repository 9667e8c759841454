// Package viz draws fmtrain's pictures: histograms of sampled σ (fmctl
// sigmas), training curves and image grids.
package viz

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Bin is one histogram bin: values in [Lo, Hi) (the last bin includes Hi).
type Bin struct {
	Lo, Hi float64
	Count  int
}

// Bins counts values into n equal bins over [lo, hi]; values outside are
// ignored and reported as the second result. It panics on n < 1 or
// hi <= lo (programming errors).
func Bins(values []float64, lo, hi float64, n int) (bins []Bin, outside int) {
	if n < 1 || !(hi > lo) {
		panic(fmt.Sprintf("viz: Bins(n=%d, lo=%v, hi=%v)", n, lo, hi))
	}
	bins = make([]Bin, n)
	w := (hi - lo) / float64(n)
	for i := range bins {
		bins[i].Lo, bins[i].Hi = lo+float64(i)*w, lo+float64(i+1)*w
	}
	bins[n-1].Hi = hi
	for _, v := range values {
		if v < lo || v > hi || math.IsNaN(v) {
			outside++
			continue
		}
		i := min(int((v-lo)/w), n-1)
		bins[i].Count++
	}
	return bins, outside
}

// HistogramOptions shape a PNG histogram.
type HistogramOptions struct {
	Title  string
	XLabel string
	Lo, Hi float64 // x range; Lo == Hi means the data's range
	Bins   int     // default 50
	Width  vg.Length
	Height vg.Length // defaults 7 × 4.5 inches
}

// Histogram writes a PNG histogram of values (as a probability density, so
// histograms of different sample sizes compare) to w.
func Histogram(w io.Writer, values []float64, opts HistogramOptions) error {
	if len(values) == 0 {
		return fmt.Errorf("viz: histogram of no values")
	}
	if opts.Bins <= 0 {
		opts.Bins = 50
	}
	if opts.Width == 0 {
		opts.Width = 7 * vg.Inch
	}
	if opts.Height == 0 {
		opts.Height = 4.5 * vg.Inch
	}
	lo, hi := opts.Lo, opts.Hi
	if !(hi > lo) {
		lo, hi = values[0], values[0]
		for _, v := range values {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		if hi == lo {
			lo, hi = lo-0.5, hi+0.5
		}
	}
	bins, _ := Bins(values, lo, hi, opts.Bins)
	width := (hi - lo) / float64(opts.Bins)
	h := &plotter.Histogram{Width: width, FillColor: color.RGBA{R: 70, G: 130, B: 180, A: 255}}
	h.LineStyle.Width = vg.Points(0.5)
	h.LineStyle.Color = color.RGBA{R: 30, G: 60, B: 90, A: 255}
	n := float64(len(values))
	for _, b := range bins {
		h.Bins = append(h.Bins, plotter.HistogramBin{Min: b.Lo, Max: b.Hi, Weight: float64(b.Count) / (n * width)})
	}
	p := plot.New()
	p.Title.Text = opts.Title
	p.X.Label.Text = opts.XLabel
	p.Y.Label.Text = "density"
	p.X.Min, p.X.Max = lo, hi
	p.Add(plotter.NewGrid(), h)
	wt, err := p.WriterTo(opts.Width, opts.Height, "png")
	if err != nil {
		return fmt.Errorf("viz: rendering histogram: %w", err)
	}
	if _, err := wt.WriteTo(w); err != nil {
		return fmt.Errorf("viz: writing histogram: %w", err)
	}
	return nil
}

// TextHistogram renders values as horizontal bars for a terminal: one line
// per bin, "[lo, hi)  bar  percent". width is the longest bar in cells.
func TextHistogram(values []float64, lo, hi float64, bins, width int) string {
	bs, _ := Bins(values, lo, hi, bins)
	maxCount := 0
	for _, b := range bs {
		maxCount = max(maxCount, b.Count)
	}
	const eighths = " ▏▎▍▌▋▊█"
	blocks := []rune(eighths)
	var sb strings.Builder
	for i, b := range bs {
		closing := ")"
		if i == len(bs)-1 {
			closing = "]"
		}
		cells := 0.0
		if maxCount > 0 {
			cells = float64(b.Count) / float64(maxCount) * float64(width)
		}
		full := int(cells)
		bar := strings.Repeat("█", full)
		if frac := int((cells - float64(full)) * 8); frac > 0 {
			bar += string(blocks[frac])
		}
		pct := 100 * float64(b.Count) / float64(max(1, len(values)))
		fmt.Fprintf(&sb, "[%.3f, %.3f%s %-*s %6.2f%%\n", b.Lo, b.Hi, closing, width+1, bar, pct)
	}
	return sb.String()
}
