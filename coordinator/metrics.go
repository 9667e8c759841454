package coordinator

import (
	"strconv"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the coordinator's Prometheus metrics, on a private registry
// (etcd registers its own collectors on the default one).
type metrics struct {
	registry        *prometheus.Registry
	heartbeats      prometheus.Counter
	proposals       prometheus.Counter
	proposalErrors  prometheus.Counter
	forwarded       prometheus.Counter
	workersLost     prometheus.Counter
	statusWrites    prometheus.Counter
	eventsPublished prometheus.Counter
}

func newMetrics(n *Node) *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "fmtrain", Subsystem: "coordinator", Name: name, Help: help})
	}
	m := &metrics{
		registry:        prometheus.NewRegistry(),
		heartbeats:      counter("heartbeats_total", "Worker heartbeats this replica served as leader."),
		proposals:       counter("raft_proposals_total", "Events this replica proposed to raft."),
		proposalErrors:  counter("raft_proposal_errors_total", "Proposals that failed (not leader, timeout, shutdown)."),
		forwarded:       counter("forwarded_requests_total", "Worker requests this follower forwarded to the leader."),
		workersLost:     counter("workers_lost_total", "Workers declared lost for missed heartbeats."),
		statusWrites:    counter("status_writes_total", "Job statuses written to etcd."),
		eventsPublished: counter("events_published_total", "Job events published on NATS."),
	}
	m.registry.MustRegister(m.heartbeats, m.proposals, m.proposalErrors, m.forwarded, m.workersLost,
		m.statusWrites, m.eventsPublished, stateCollector{n},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// stateCollector reads raft's Stats and the FSM at scrape time.
type stateCollector struct{ n *Node }

var _ prometheus.Collector = stateCollector{}

var (
	descRaft = func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("fmtrain_coordinator_raft_"+name, help, nil, nil)
	}
	descRaftStats = map[string]*prometheus.Desc{
		"term":           descRaft("term", "Current raft term."),
		"last_log_index": descRaft("last_log_index", "Index of the last raft log entry."),
		"commit_index":   descRaft("commit_index", "Highest committed raft index."),
		"applied_index":  descRaft("applied_index", "Highest raft index applied to the FSM."),
		"fsm_pending":    descRaft("fsm_pending", "Committed entries waiting to be applied."),
		"num_peers":      descRaft("num_peers", "Other voting replicas."),
	}
	descLeader  = descRaft("is_leader", "1 when this replica is the raft leader and has caught up.")
	descState   = prometheus.NewDesc("fmtrain_coordinator_raft_state", "1 for the replica's raft state, 0 for the others.", []string{"state"}, nil)
	descJobs    = prometheus.NewDesc("fmtrain_coordinator_jobs", "Jobs by state.", []string{"state"}, nil)
	descWorkers = prometheus.NewDesc("fmtrain_coordinator_workers", "Registered workers, by whether a job runs on them.", []string{"busy"}, nil)
	descOutbox  = prometheus.NewDesc("fmtrain_coordinator_outbox_actions", "Actions decided but not yet executed by the leader.", nil, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range descRaftStats {
		ch <- d
	}
	ch <- descLeader
	ch <- descState
	ch <- descJobs
	ch <- descWorkers
	ch <- descOutbox
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	stats := c.n.raft.Stats()
	for key, d := range descRaftStats {
		if v, err := strconv.ParseFloat(stats[key], 64); err == nil {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
		}
	}
	leader := 0.0
	if c.n.IsLeader() {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
	st := c.n.raft.State()
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s == st {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, s.String())
	}
	counts := map[api.JobState]int{}
	for _, j := range c.n.fsm.jobs() {
		counts[j.state]++
	}
	for _, s := range []api.JobState{api.JobPending, api.JobRunning, api.JobReforming, api.JobFinished, api.JobFailed, api.JobCancelled} {
		ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
	busy := 0
	ws := c.n.fsm.workers()
	for _, w := range ws {
		if w.job != "" {
			busy++
		}
	}
	ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(busy), "true")
	ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(len(ws)-busy), "false")
	ch <- prometheus.MustNewConstMetric(descOutbox, prometheus.GaugeValue, float64(len(c.n.fsm.outbox())))
}
