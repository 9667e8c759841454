// Command healthcheck is the probe baked into fmtrain's FROM-scratch images:
// there is no shell or curl inside them, so Docker's HEALTHCHECK and compose's
// healthcheck run this instead. It GETs each URL given and exits 0 only when
// every one answers 2xx within the timeout; otherwise it prints why and exits 1.
//
//	healthcheck [-timeout 2s] http://127.0.0.1:7070/readyz [more URLs...]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	timeout := flag.Duration("timeout", 2*time.Second, "deadline for all probes together")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: healthcheck [-timeout 2s] URL [URL...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	for _, url := range flag.Args() {
		if err := probe(ctx, http.DefaultClient, url); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

// probe GETs url and returns nil for a 2xx answer, or an error that quotes the
// start of the body (readiness endpoints explain themselves there).
func probe(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: bad URL %q: %w", url, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("healthcheck: %s: %s: %s", url, resp.Status, body)
	}
	return nil
}
