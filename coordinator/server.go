package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/fmtrain/fmtrain/coordinator/api"
	"github.com/fmtrain/fmtrain/coordinator/core"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// forwardedHeader marks a request a follower forwarded, so a replica that
// is not (or no longer) the leader answers 503 instead of forwarding again.
const forwardedHeader = "X-Fmtrain-Forwarded-By"

func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+api.PathRegister, n.leaderOnly(n.handleRegister))
	mux.Handle("POST "+api.PathHeartbeat, n.leaderOnly(n.handleHeartbeat))
	mux.Handle("POST "+api.PathReport, n.leaderOnly(n.handleReport))
	mux.Handle("POST "+api.PathLeave, n.leaderOnly(n.handleLeave))
	mux.Handle("POST "+api.PathAddVoter, n.leaderOnly(n.handleAddVoter))
	mux.Handle("POST "+api.PathRemoveServer, n.leaderOnly(n.handleRemoveServer))
	mux.HandleFunc("GET "+api.PathStatus, n.handleStatus)
	mux.HandleFunc("GET "+api.PathHealthz, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET "+api.PathReadyz, n.handleReadyz)
	mux.Handle("GET "+api.PathMetrics, promhttp.HandlerFor(n.metrics.registry, promhttp.HandlerOpts{}))
	return mux
}

// leaderOnly serves h on the leader and forwards to the leader elsewhere.
func (n *Node) leaderOnly(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.IsLeader() {
			h(w, r)
			return
		}
		_, leaderID := n.raft.LeaderWithID()
		target := ""
		if leaderID != "" && string(leaderID) != n.opts.ID {
			target = n.fsm.coordinatorHTTP(string(leaderID))
		}
		if target == "" || r.Header.Get(forwardedHeader) != "" {
			writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "no coordinator leader is ready; retry", target)
			return
		}
		u, err := url.Parse(target)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, fmt.Sprintf("leader address %q: %v", target, err), "")
			return
		}
		n.metrics.forwarded.Inc()
		proxy := httputil.NewSingleHostReverseProxy(u)
		proxy.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
			writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, fmt.Sprintf("forwarding to leader %s: %v", target, err), target)
		}
		r.Header.Set(forwardedHeader, n.opts.ID)
		proxy.ServeHTTP(w, r)
	})
}

func (n *Node) handleRegister(w http.ResponseWriter, r *http.Request) {
	var req api.RegisterRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := req.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error(), "")
		return
	}
	if !n.apply(w, core.WorkerRegistered{Worker: req, At: time.Now()}) {
		return
	}
	n.live.Load().heartbeat(api.HeartbeatRequest{WorkerID: req.WorkerID}, time.Now())
	writeJSON(w, http.StatusOK, api.RegisterResponse{WorkerID: req.WorkerID,
		HeartbeatInterval: api.Duration(n.opts.HeartbeatInterval), HeartbeatTimeout: api.Duration(n.opts.HeartbeatTimeout)})
}

func (n *Node) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	var req api.HeartbeatRequest
	if !readJSON(w, r, &req) {
		return
	}
	n.metrics.heartbeats.Inc()
	a, known := n.fsm.assignment(req.WorkerID)
	if !known {
		writeError(w, http.StatusNotFound, api.CodeUnknownWorker, fmt.Sprintf("worker %q is not registered (or was declared lost); register again", req.WorkerID), "")
		return
	}
	n.live.Load().heartbeat(req, time.Now())
	writeJSON(w, http.StatusOK, api.HeartbeatResponse{Assignment: a})
}

func (n *Node) handleReport(w http.ResponseWriter, r *http.Request) {
	var rep api.Report
	if !readJSON(w, r, &rep) {
		return
	}
	if err := rep.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error(), "")
		return
	}
	res, err := n.propose(core.Reported{Report: rep, At: time.Now()})
	if err != nil {
		n.applyFailed(w, err)
		return
	}
	if res.accepted && rep.Kind == api.ReportFailed && !rep.Fatal && rep.LostPeer != "" {
		n.live.Load().suspect(rep.LostPeer, rep.WorkerID, time.Now())
	}
	writeJSON(w, http.StatusOK, api.ReportResponse{Accepted: res.accepted})
}

func (n *Node) handleLeave(w http.ResponseWriter, r *http.Request) {
	var req api.LeaveRequest
	if !readJSON(w, r, &req) {
		return
	}
	reason := "left"
	if req.Reason != "" {
		reason = "left: " + req.Reason
	}
	if !n.apply(w, core.WorkerLost{WorkerID: req.WorkerID, Reason: reason, At: time.Now()}) {
		return
	}
	writeJSON(w, http.StatusOK, api.LeaveResponse{})
}

// handleAddVoter adds a replica started with Join to the raft group.
func (n *Node) handleAddVoter(w http.ResponseWriter, r *http.Request) {
	var req api.MembershipRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.ID == "" || req.RaftAddr == "" {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "add-voter needs id and raft_addr", "")
		return
	}
	if err := n.raft.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.RaftAddr), 0, applyTimeout).Error(); err != nil {
		n.applyFailed(w, fmt.Errorf("coordinator: adding voter %s at %s: %w", req.ID, req.RaftAddr, err))
		return
	}
	n.log.Info("added raft voter", "id", req.ID, "raft_addr", req.RaftAddr)
	writeJSON(w, http.StatusOK, n.membership())
}

// handleRemoveServer removes a replica (e.g. one whose host is gone for good).
func (n *Node) handleRemoveServer(w http.ResponseWriter, r *http.Request) {
	var req api.MembershipRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.ID == "" {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "remove-server needs id", "")
		return
	}
	if err := n.raft.RemoveServer(raft.ServerID(req.ID), 0, applyTimeout).Error(); err != nil {
		n.applyFailed(w, fmt.Errorf("coordinator: removing server %s: %w", req.ID, err))
		return
	}
	n.log.Info("removed raft server", "id", req.ID)
	writeJSON(w, http.StatusOK, n.membership())
}

// membership is the raft configuration as this replica knows it.
func (n *Node) membership() api.MembershipResponse {
	var resp api.MembershipResponse
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return resp
	}
	for _, s := range f.Configuration().Servers {
		resp.Servers = append(resp.Servers, api.Member{ID: string(s.ID), RaftAddr: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return resp
}

// apply proposes ev and writes the error answer when that fails.
func (n *Node) apply(w http.ResponseWriter, ev core.Event) bool {
	if _, err := n.propose(ev); err != nil {
		n.applyFailed(w, err)
		return false
	}
	return true
}

func (n *Node) applyFailed(w http.ResponseWriter, err error) {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrRaftShutdown) {
		writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, err.Error(), "")
		return
	}
	writeError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), "")
}

// status is what /v1/status and /readyz report.
func (n *Node) status(ctx context.Context) api.CoordinatorStatus {
	_, id := n.raft.LeaderWithID()
	st := api.CoordinatorStatus{ID: n.opts.ID, RaftState: n.raft.State().String(), LeaderID: string(id),
		AppliedIndex: n.raft.AppliedIndex(), Jobs: len(n.fsm.jobs()), Workers: len(n.fsm.workers())}
	if id != "" {
		st.LeaderHTTP = n.fsm.coordinatorHTTP(string(id))
	}
	switch {
	case id == "":
		st.NotReady = "raft has no leader"
	case string(id) == n.opts.ID && !n.IsLeader():
		st.NotReady = "leader is catching up"
	case st.LeaderHTTP == "":
		st.NotReady = "the leader has not announced its address yet"
	default:
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := n.opts.Etcd.Get(cctx, api.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			st.NotReady = "etcd unreachable: " + err.Error()
		}
	}
	st.Ready = st.NotReady == ""
	return st
}

func (n *Node) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.status(r.Context()))
}

func (n *Node) handleReadyz(w http.ResponseWriter, r *http.Request) {
	st := n.status(r.Context())
	code := http.StatusOK
	if !st.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, st)
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("decoding %s request: %v", r.URL.Path, err), "")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, errCode, msg, leader string) {
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, code, api.ErrorResponse{Error: msg, Code: errCode, Leader: leader})
}
