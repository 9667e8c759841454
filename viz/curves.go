package viz

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Series is one training curve (e.g. loss against step).
type Series struct {
	Name string
	X, Y []float64
	// LogY draws the curve on a log scale (non-positive values are skipped).
	LogY bool
}

// Curves writes a PNG with one panel per series, stacked, sharing the title.
func Curves(w io.Writer, title string, series []Series) error {
	if len(series) == 0 {
		return fmt.Errorf("viz: no series to plot")
	}
	const width, panel = 8 * vg.Inch, 2.6 * vg.Inch
	c := vgimg.New(width, panel*vg.Length(len(series)))
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: len(series), Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadX: vg.Points(6), PadY: vg.Points(6)}
	plots := make([][]*plot.Plot, len(series))
	for i, s := range series {
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("viz: series %q has %d x and %d y values", s.Name, len(s.X), len(s.Y))
		}
		p := plot.New()
		if i == 0 {
			p.Title.Text = title
		}
		p.Y.Label.Text = s.Name
		if i == len(series)-1 {
			p.X.Label.Text = "step"
		}
		pts := make(plotter.XYs, 0, len(s.X))
		for k := range s.X {
			if math.IsNaN(s.Y[k]) || math.IsInf(s.Y[k], 0) || (s.LogY && s.Y[k] <= 0) {
				continue
			}
			pts = append(pts, plotter.XY{X: s.X[k], Y: s.Y[k]})
		}
		if s.LogY {
			p.Y.Scale = plot.LogScale{}
			p.Y.Tick.Marker = plot.TickerFunc(logTicks125)
		}
		p.Add(plotter.NewGrid())
		if len(pts) > 0 {
			l, err := plotter.NewLine(pts)
			if err != nil {
				return fmt.Errorf("viz: series %q: %w", s.Name, err)
			}
			l.Color = color.RGBA{31, 119, 180, 255}
			l.Width = vg.Points(1.2)
			p.Add(l)
		}
		plots[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(w); err != nil {
		return fmt.Errorf("viz: writing curves: %w", err)
	}
	return nil
}

// logTicks125 labels 1, 2 and 5 times each power of ten (plot.LogTicks
// labels only the powers, which leaves a loss curve spanning one decade
// with a single label) and marks the other integers as minor ticks.
func logTicks125(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for k := math.Floor(math.Log10(lo)); k <= math.Ceil(math.Log10(hi)); k++ {
		for m := 1.0; m <= 9; m++ {
			v := m * math.Pow(10, k)
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', 3, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}
