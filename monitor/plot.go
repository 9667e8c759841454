package monitor

import (
	"fmt"
	"io"

	"github.com/fmtrain/fmtrain/viz"
)

// WritePlot draws the job's loss (log scale), learning rate and gradient
// norm against the step into a PNG at path.
func WritePlot(path, job string, c Curves) error {
	err := viz.SavePNG(path, func(w io.Writer) error {
		return viz.Curves(w, "fmtrain job "+job, []viz.Series{
			{Name: "loss", X: c.Step, Y: c.Loss, LogY: true},
			{Name: "learning rate", X: c.Step, Y: c.LR},
			{Name: "grad norm (before clipping)", X: c.Step, Y: c.GradNorm},
		})
	})
	if err != nil {
		return fmt.Errorf("monitor: plot of job %s: %w", job, err)
	}
	return nil
}
