// Package monitor turns a job's telemetry stream into what a person reads:
// the live progress bar and latest metrics of `fmctl watch` (and of `fmctl
// local`), the log lines of `fmctl logs`, and the per-step curves `fmctl
// plot` draws. It reads NATS only through package telemetry.
//
// Progress is a pure type (messages in, state and printable lines out);
// Watch, PrintLogs and ReadCurves drive it from the JetStream stream.
package monitor
