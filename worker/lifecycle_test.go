package worker

import (
	"reflect"
	"testing"
)

func TestLifecycle(t *testing.T) {
	g1 := GenerationKey{"job", 1}
	g2 := GenerationKey{"job", 2}
	g3 := GenerationKey{"job", 3}
	other := GenerationKey{"other", 1}
	start := func(g GenerationKey) []Action { return []Action{{Kind: ActionStart, Gen: g}} }
	stop := func(g GenerationKey) []Action { return []Action{{Kind: ActionStop, Gen: g}} }
	withdraw := func(g GenerationKey) []Action { return []Action{{Kind: ActionStop, Gen: g, Withdrawn: true}} }
	exit := []Action{{Kind: ActionExit}}

	type step struct {
		name  string
		do    func(l *Lifecycle) []Action
		want  []Action
		phase Phase
	}
	assigned := func(g *GenerationKey) func(*Lifecycle) []Action {
		return func(l *Lifecycle) []Action { return l.Assigned(g) }
	}
	ended := func(g GenerationKey) func(*Lifecycle) []Action {
		return func(l *Lifecycle) []Action { return l.Ended(g) }
	}
	registered := func(l *Lifecycle) []Action { return l.Registered() }
	drain := func(l *Lifecycle) []Action { return l.Drain() }

	cases := []struct {
		name  string
		steps []step
	}{
		{"train to the end, then idle", []step{
			{"assignment before registration is ignored", assigned(&g1), nil, PhaseRegistering},
			{"register", registered, nil, PhaseIdle},
			{"nothing assigned", assigned(nil), nil, PhaseIdle},
			{"assigned", assigned(&g1), start(g1), PhaseTraining},
			{"same assignment again", assigned(&g1), nil, PhaseTraining},
			{"finished", ended(g1), nil, PhaseIdle},
			{"stale assignment is not restarted", assigned(&g1), nil, PhaseIdle},
			{"next job", assigned(&other), start(other), PhaseTraining},
		}},
		{"peer lost: wait for the next generation", []step{
			{"register", registered, nil, PhaseIdle},
			{"assigned", assigned(&g1), start(g1), PhaseTraining},
			{"collective error ends it", ended(g1), nil, PhaseIdle},
			{"coordinator still lists g1", assigned(&g1), nil, PhaseIdle},
			{"new generation", assigned(&g2), start(g2), PhaseTraining},
		}},
		{"superseded while training", []step{
			{"register", registered, nil, PhaseIdle},
			{"assigned", assigned(&g1), start(g1), PhaseTraining},
			{"re-formed", assigned(&g2), stop(g1), PhaseTraining},
			{"stop is issued once", assigned(&g3), nil, PhaseTraining},
			{"old one returns, newest starts", ended(g1), start(g3), PhaseTraining},
		}},
		{"withdrawn while training", []step{
			{"register", registered, nil, PhaseIdle},
			{"assigned", assigned(&g1), start(g1), PhaseTraining},
			{"withdrawn", assigned(nil), withdraw(g1), PhaseTraining},
			{"returns", ended(g1), nil, PhaseIdle},
		}},
		{"withdrawn, then re-formed before it returned", []step{
			{"register", registered, nil, PhaseIdle},
			{"assigned", assigned(&g1), start(g1), PhaseTraining},
			{"withdrawn", assigned(nil), withdraw(g1), PhaseTraining},
			{"re-formed: queued, no second stop", assigned(&g2), nil, PhaseTraining},
			{"returns, new one starts", ended(g1), start(g2), PhaseTraining},
		}},
		{"drain while idle exits", []step{
			{"register", registered, nil, PhaseIdle},
			{"drain", drain, exit, PhaseStopped},
			{"nothing starts after", assigned(&g1), nil, PhaseStopped},
			{"drain twice", drain, nil, PhaseStopped},
		}},
		{"drain while training stops at the step boundary", []step{
			{"register", registered, nil, PhaseIdle},
			{"assigned", assigned(&g1), start(g1), PhaseTraining},
			{"drain", drain, stop(g1), PhaseDraining},
			{"drain again", drain, nil, PhaseDraining},
			{"still assigned: no second stop", assigned(&g1), nil, PhaseDraining},
			{"re-formed without us: nothing new", assigned(&g2), nil, PhaseDraining},
			{"returns: exit, g2 not started", ended(g1), exit, PhaseStopped},
		}},
		{"drain drops a queued assignment", []step{
			{"register", registered, nil, PhaseIdle},
			{"assigned", assigned(&g1), start(g1), PhaseTraining},
			{"re-formed", assigned(&g2), stop(g1), PhaseTraining},
			{"drain: already stopping", drain, nil, PhaseDraining},
			{"returns", ended(g1), exit, PhaseStopped},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := NewLifecycle()
			for _, s := range c.steps {
				got := s.do(l)
				if !reflect.DeepEqual(got, s.want) {
					t.Fatalf("%s: actions %v, want %v", s.name, got, s.want)
				}
				if l.Phase() != s.phase {
					t.Fatalf("%s: phase %v, want %v", s.name, l.Phase(), s.phase)
				}
			}
		})
	}
}

func TestLifecycleEndedWrongGenerationPanics(t *testing.T) {
	l := NewLifecycle()
	l.Registered()
	l.Assigned(&GenerationKey{"job", 1})
	defer func() {
		if recover() == nil {
			t.Fatal("Ended for a generation that is not training did not panic")
		}
	}()
	l.Ended(GenerationKey{"job", 2})
}
