package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.WriteHeader(http.StatusOK)
		case "/slow":
			<-r.Context().Done()
		default:
			http.Error(w, "no raft leader", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := probe(ctx, srv.Client(), srv.URL+"/readyz"); err != nil {
		t.Fatalf("ready endpoint: %v", err)
	}
	err := probe(ctx, srv.Client(), srv.URL+"/notready")
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "no raft leader") {
		t.Fatalf("503 endpoint: got %v, want an error quoting status and body", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if err := probe(short, srv.Client(), srv.URL+"/slow"); err == nil {
		t.Fatal("hanging endpoint: got nil, want a deadline error")
	}
	if err := probe(ctx, srv.Client(), "http://[::1"); err == nil || !strings.Contains(err.Error(), "bad URL") {
		t.Fatalf("malformed URL: got %v", err)
	}
}
