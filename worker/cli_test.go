package worker

import (
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	t.Setenv("FMTRAIN_NATS_URL", "nats://env:4222")
	t.Setenv("FMTRAIN_DEVICE", "cuda:1")
	c, err := ParseFlags([]string{"--coordinator", "http://a:7070, http://b:7070", "--device", "cpu", "--collective-timeout", "5s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Coordinators, []string{"http://a:7070", "http://b:7070"}) {
		t.Errorf("coordinators = %q", c.Coordinators)
	}
	if c.NATSURL != "nats://env:4222" {
		t.Errorf("--nats-url from the environment = %q", c.NATSURL)
	}
	if c.Device != "cpu" {
		t.Errorf("a flag must win over its environment variable: device = %q", c.Device)
	}
	if c.CollectiveTimeout != 5*time.Second || c.DrainTimeout != DefaultDrainTimeout || c.CollectiveAddr != "0.0.0.0:7100" {
		t.Errorf("config = %+v", c)
	}

	for _, bad := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--coordinator", ""}, "", "--coordinator is empty"},
		{[]string{"--collective-addr", "nohost"}, "", "--collective-addr"},
		{[]string{"--log-level", "loud"}, "", "--log-level"},
		{[]string{"--drain-timeout", "0s"}, "", "--drain-timeout"},
		{[]string{"stray"}, "", "unexpected argument"},
		{nil, "FMTRAIN_COLLECTIVE_TIMEOUT=forever", "FMTRAIN_COLLECTIVE_TIMEOUT"},
	} {
		if bad.env != "" {
			k, v, _ := strings.Cut(bad.env, "=")
			t.Setenv(k, v)
		}
		_, err := ParseFlags(bad.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseFlags(%q, %s) = %v, want an error mentioning %q", bad.args, bad.env, err, bad.want)
		}
	}
}

func TestAdvertiseAddr(t *testing.T) {
	if got := advertiseAddr("127.0.0.1:7100"); got != "127.0.0.1:7100" {
		t.Errorf("loopback listen address changed to %q", got)
	}
	got := advertiseAddr("0.0.0.0:7100")
	if strings.HasPrefix(got, "0.0.0.0") || !strings.HasSuffix(got, ":7100") {
		t.Errorf("advertiseAddr(0.0.0.0:7100) = %q, want a dialable host with the same port", got)
	}
}

func TestHealthEndpoints(t *testing.T) {
	w, err := New(Options{Coordinator: newMemCoordinator("j", "", 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := serveHealth("127.0.0.1:0", w, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	get := func(path string) int {
		resp, err := http.Get("http://" + srv.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("/healthz"); got != http.StatusOK {
		t.Errorf("/healthz = %d", got)
	}
	if got := get("/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz before registration = %d, want 503", got)
	}
	w.phase.Store(int32(PhaseTraining))
	if got := get("/readyz"); got != http.StatusOK {
		t.Errorf("/readyz while training = %d, want 200", got)
	}
}
