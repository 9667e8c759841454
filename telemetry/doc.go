// Package telemetry owns everything fmtrain makes observable over NATS: the
// subject names, the JSON message types, the JetStream stream that keeps them,
// and small publisher and subscriber helpers.
//
// Subjects (one job's traffic is `fmtrain.<job>.>`):
//
//	fmtrain.<job>.metrics.<rank>   Metrics, one message per logged step per rank
//	fmtrain.<job>.logs.<rank>      LogRecord, the worker's slog records
//	fmtrain.<job>.events           Event, the job's life: started, generation
//	                               formed, worker lost, checkpoint written, …
//
// Every subject is captured by the JetStream stream StreamName, so `fmctl plot`
// and `fmctl logs` work after the fact; live subscribers (fmctl watch) read
// the same stream through an ordered consumer, which also delivers what was
// published before they started.
//
// A worker publishes with a Publisher (metrics and logs asynchronously so the
// training loop never waits on NATS, events with an acknowledgement); the
// coordinator publishes events through the same type with rank NoRank.
// docs/metrics.md documents every subject and field.
package telemetry
