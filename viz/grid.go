package viz

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// GridOptions lay out an image grid.
type GridOptions struct {
	// Cols is the number of images per row (the rest wrap to the next row).
	Cols int
	// Scale enlarges each pixel to Scale×Scale (nearest neighbour); default 4.
	Scale int
	// Labels, one per row, are written left of the rows (may be nil).
	Labels []string
}

// Grid writes a PNG of n RGB images held as [n,3,H,W] float32 values in
// [-1, 1] (the pixel-space latents of the demo data; values outside are
// clipped), Cols per row, each row optionally labelled.
func Grid(w io.Writer, imgs []float32, n, H, W int, o GridOptions) error {
	if n <= 0 || H <= 0 || W <= 0 || len(imgs) != n*3*H*W {
		return fmt.Errorf("viz: grid of %d images 3×%d×%d needs %d values, got %d", n, H, W, n*3*H*W, len(imgs))
	}
	if o.Cols <= 0 {
		o.Cols = n
	}
	if o.Scale <= 0 {
		o.Scale = 4
	}
	rows := (n + o.Cols - 1) / o.Cols
	face := basicfont.Face7x13
	labelW := 0
	for _, l := range o.Labels {
		labelW = max(labelW, font.MeasureString(face, l).Ceil()+8)
	}
	const pad = 2
	cw, ch := W*o.Scale+pad, H*o.Scale+pad
	img := image.NewRGBA(image.Rect(0, 0, labelW+o.Cols*cw+pad, rows*ch+pad))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.RGBA{40, 40, 40, 255}), image.Point{}, draw.Src)
	for k := 0; k < n; k++ {
		r, c := k/o.Cols, k%o.Cols
		x0, y0 := labelW+pad+c*cw, pad+r*ch
		one := imgs[k*3*H*W : (k+1)*3*H*W]
		for y := 0; y < H*o.Scale; y++ {
			for x := 0; x < W*o.Scale; x++ {
				p := (y/o.Scale)*W + x/o.Scale
				img.SetRGBA(x0+x, y0+y, color.RGBA{toByte(one[p]), toByte(one[H*W+p]), toByte(one[2*H*W+p]), 255})
			}
		}
	}
	d := font.Drawer{Dst: img, Src: image.NewUniform(color.White), Face: face}
	for r, l := range o.Labels {
		if r >= rows {
			break
		}
		d.Dot = fixed.P(4, pad+r*ch+ch/2+4)
		d.DrawString(l)
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("viz: encoding grid: %w", err)
	}
	return nil
}

// toByte maps [-1, 1] to [0, 255], clipping.
func toByte(v float32) uint8 {
	x := math.Round((float64(v) + 1) * 127.5)
	return uint8(max(0, min(255, x)))
}
