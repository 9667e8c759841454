package telemetry

import (
	"context"
	"log/slog"
	"time"
)

// LogHandler is a slog.Handler that ships records at or above a level to a
// Publisher's logs subject. Combine it with a console handler to log both
// locally and to NATS. Publishing is asynchronous; a failed publish is not a
// logging error (the console copy still exists), it surfaces in Flush.
type LogHandler struct {
	pub    *Publisher
	worker string
	level  slog.Leveler
	attrs  []slog.Attr
	groups []string
}

var _ slog.Handler = (*LogHandler)(nil)

// NewLogHandler returns a handler publishing through pub; worker (may be
// empty) is recorded in every LogRecord.
func NewLogHandler(pub *Publisher, worker string, level slog.Leveler) *LogHandler {
	return &LogHandler{pub: pub, worker: worker, level: level}
}

// Enabled implements slog.Handler.
func (h *LogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle implements slog.Handler.
func (h *LogHandler) Handle(_ context.Context, r slog.Record) error {
	rec := LogRecord{Time: r.Time, Worker: h.worker, Level: r.Level.String(), Message: r.Message}
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	attrs := make(map[string]any, len(h.attrs)+r.NumAttrs())
	prefix := ""
	for _, g := range h.groups {
		prefix += g + "."
	}
	for _, a := range h.attrs {
		addAttr(attrs, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		addAttr(attrs, prefix, a)
		return true
	})
	if len(attrs) > 0 {
		rec.Attrs = attrs
	}
	_ = h.pub.Log(rec) // see the type's comment: failures surface in Flush
	return nil
}

// addAttr flattens a (possibly grouped) attribute into dotted keys.
func addAttr(into map[string]any, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, ga := range v.Group() {
			addAttr(into, p, ga)
		}
		return
	}
	if a.Key == "" {
		return
	}
	switch v.Kind() {
	case slog.KindDuration:
		into[prefix+a.Key] = v.Duration().String()
	case slog.KindTime:
		into[prefix+a.Key] = v.Time()
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			into[prefix+a.Key] = err.Error()
			return
		}
		into[prefix+a.Key] = v.Any()
	default:
		into[prefix+a.Key] = v.Any()
	}
}

// WithAttrs implements slog.Handler.
func (h *LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	prefix := ""
	for _, g := range h.groups {
		prefix += g + "."
	}
	h2.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		if prefix != "" {
			a = slog.Group(prefix[:len(prefix)-1], a)
		}
		h2.attrs = append(h2.attrs, a)
	}
	return &h2
}

// WithGroup implements slog.Handler.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.groups = append(append([]string(nil), h.groups...), name)
	return &h2
}
