package worker

import (
	"fmt"
	"strconv"
)

// Phase is where a worker is in its life. The zero value is invalid.
type Phase int

// The phases, in the order a worker normally passes through them.
const (
	// PhaseRegistering: not yet known to a coordinator.
	PhaseRegistering Phase = 1 + iota
	// PhaseIdle: registered, waiting for a generation to be assigned.
	PhaseIdle
	// PhaseTraining: running one generation of one job.
	PhaseTraining
	// PhaseDraining: asked to stop (SIGTERM); the current generation is
	// finishing its step.
	PhaseDraining
	// PhaseStopped: nothing left to do; Run returns.
	PhaseStopped
)

func (p Phase) String() string {
	switch p {
	case PhaseRegistering:
		return "registering"
	case PhaseIdle:
		return "idle"
	case PhaseTraining:
		return "training"
	case PhaseDraining:
		return "draining"
	case PhaseStopped:
		return "stopped"
	}
	return "Phase(" + strconv.Itoa(int(p)) + ")"
}

// GenerationKey names one generation of one job: what an assignment is about.
type GenerationKey struct {
	Job        string
	Generation uint64
}

func (g GenerationKey) String() string { return g.Job + "/gen-" + strconv.FormatUint(g.Generation, 10) }

// ActionKind is what the lifecycle asks its driver to do.
type ActionKind int

// The actions.
const (
	// ActionStart: start training the action's generation.
	ActionStart ActionKind = 1 + iota
	// ActionStop: stop training the action's generation (it was withdrawn or
	// superseded); the driver calls Ended when the training has returned.
	ActionStop
	// ActionExit: the worker is done; Run returns.
	ActionExit
)

func (k ActionKind) String() string {
	switch k {
	case ActionStart:
		return "start"
	case ActionStop:
		return "stop"
	case ActionExit:
		return "exit"
	}
	return "ActionKind(" + strconv.Itoa(int(k)) + ")"
}

// Action is one instruction to the driver.
type Action struct {
	Kind ActionKind
	Gen  GenerationKey
	// Withdrawn marks an ActionStop whose generation the coordinator
	// withdrew without assigning a new one (the job re-forms after a
	// failure): rank 0 checkpoints its last completed step before returning,
	// because the coordinator waits for that report before the next
	// generation forms. A superseded generation (a new one is already
	// assigned, resuming from a fixed checkpoint) writes nothing more.
	Withdrawn bool
}

// Lifecycle is the worker's own state machine: register → wait for a
// generation → train → (drain) → stop. It is pure: it does no I/O, starts
// no goroutine and reads no clock; the worker's driver feeds it what it
// observed (the assignment in each heartbeat reply, a training run ending, a
// drain request) and executes the actions it returns, in order.
//
// Rules:
//   - at most one generation trains at a time;
//   - a generation that ended (finished, failed, or lost a peer) is never
//     restarted, even if the coordinator still lists it: the coordinator must
//     form a new generation (a new number) after a failure;
//   - a new assignment while another generation trains stops the old one
//     first and starts the new one once the old one has ended;
//   - draining stops the current generation at its next step boundary,
//     starts nothing new and exits once nothing trains.
//
// Not safe for concurrent use: the driver owns it from one goroutine.
type Lifecycle struct {
	phase    Phase
	draining bool
	// training is the generation being trained (valid when running).
	training GenerationKey
	running  bool
	// stopping is set when ActionStop was issued for training.
	stopping bool
	// next is the assignment to start once the current one has ended.
	next    GenerationKey
	hasNext bool
	// ended holds every generation that ran here; none is started again.
	ended map[GenerationKey]bool
}

// NewLifecycle returns a lifecycle in PhaseRegistering.
func NewLifecycle() *Lifecycle {
	return &Lifecycle{phase: PhaseRegistering, ended: make(map[GenerationKey]bool)}
}

// Phase is the current phase.
func (l *Lifecycle) Phase() Phase { return l.phase }

// Training returns the generation being trained, if any.
func (l *Lifecycle) Training() (GenerationKey, bool) { return l.training, l.running }

// Registered records that a coordinator accepted the worker. Registering
// again (after a coordinator lost track of the worker) keeps the phase.
func (l *Lifecycle) Registered() []Action {
	if l.phase == PhaseRegistering {
		l.phase = PhaseIdle
	}
	return nil
}

// Assigned records the assignment carried by a heartbeat reply: nil when the
// coordinator has nothing for this worker.
func (l *Lifecycle) Assigned(a *GenerationKey) []Action {
	if l.phase == PhaseRegistering || l.phase == PhaseStopped {
		return nil
	}
	if l.running {
		if a != nil && *a == l.training {
			return nil
		}
		l.hasNext = false
		if a != nil && !l.draining && !l.ended[*a] {
			l.next, l.hasNext = *a, true
		}
		if l.stopping {
			return nil
		}
		l.stopping = true
		return []Action{{Kind: ActionStop, Gen: l.training, Withdrawn: !l.hasNext}}
	}
	if a == nil || l.draining || l.ended[*a] {
		return nil
	}
	return l.start(*a)
}

func (l *Lifecycle) start(g GenerationKey) []Action {
	l.training, l.running, l.stopping = g, true, false
	l.phase = PhaseTraining
	return []Action{{Kind: ActionStart, Gen: g}}
}

// Ended records that training g has returned, for whatever reason (it
// finished, failed, lost a peer or was stopped). It panics if g is not the
// generation the lifecycle started: that is a driver bug.
func (l *Lifecycle) Ended(g GenerationKey) []Action {
	if !l.running || g != l.training {
		panic(fmt.Sprintf("worker: lifecycle: %v ended but %v is training (running=%v)", g, l.training, l.running))
	}
	l.ended[g] = true
	l.running, l.stopping = false, false
	if l.draining {
		l.phase = PhaseStopped
		return []Action{{Kind: ActionExit}}
	}
	l.phase = PhaseIdle
	if l.hasNext {
		l.hasNext = false
		return l.start(l.next)
	}
	return nil
}

// Drain records a request to stop (SIGTERM). The protocol asks a leaving
// worker to finish its current step and go (the coordinator re-forms the job
// without it from the last checkpoint), so a training generation is stopped
// at its next step boundary and the worker exits once it has returned; with
// nothing training the worker exits now.
func (l *Lifecycle) Drain() []Action {
	if l.phase == PhaseStopped || l.draining {
		return nil
	}
	l.draining, l.hasNext = true, false
	if l.running {
		l.phase = PhaseDraining
		if l.stopping {
			return nil
		}
		l.stopping = true
		return []Action{{Kind: ActionStop, Gen: l.training}}
	}
	l.phase = PhaseStopped
	return []Action{{Kind: ActionExit}}
}

// Draining reports whether Drain was called.
func (l *Lifecycle) Draining() bool { return l.draining }
