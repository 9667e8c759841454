package api

import (
	"fmt"
	"strings"
)

// The etcd key layout, in one place. Everything fmtrain keeps in etcd lives
// under Prefix:
//
//	/fmtrain/jobs/<id>/spec     the job YAML exactly as submitted (fmctl submit, create-only)
//	/fmtrain/jobs/<id>/cancel   present once a user asked to cancel (fmctl cancel)
//	/fmtrain/jobs/<id>/status   JobStatus as JSON, written only by the coordinator leader
const (
	Prefix     = "/fmtrain/"
	JobsPrefix = Prefix + "jobs/"
)

// The last element of a job key.
const (
	SpecKeySuffix   = "spec"
	CancelKeySuffix = "cancel"
	StatusKeySuffix = "status"
)

// JobSpecKey is where job id's spec is stored.
func JobSpecKey(id string) string { return JobsPrefix + id + "/" + SpecKeySuffix }

// JobCancelKey is written to ask the coordinator to cancel job id.
func JobCancelKey(id string) string { return JobsPrefix + id + "/" + CancelKeySuffix }

// JobStatusKey holds job id's JobStatus.
func JobStatusKey(id string) string { return JobsPrefix + id + "/" + StatusKeySuffix }

// ParseJobKey splits a key under JobsPrefix into the job id and the suffix
// (SpecKeySuffix, CancelKeySuffix, StatusKeySuffix or another name).
func ParseJobKey(key string) (id, suffix string, err error) {
	rest, ok := strings.CutPrefix(key, JobsPrefix)
	if !ok {
		return "", "", fmt.Errorf("api: key %q is not under %s", key, JobsPrefix)
	}
	id, suffix, ok = strings.Cut(rest, "/")
	if !ok || id == "" || suffix == "" || strings.Contains(suffix, "/") {
		return "", "", fmt.Errorf("api: key %q is not %s<id>/<name>", key, JobsPrefix)
	}
	return id, suffix, nil
}

// MaxJobIDLen bounds job ids (they appear in NATS subjects and file names).
const MaxJobIDLen = 64

// CheckJobID reports whether id can name a job: 1 to MaxJobIDLen letters,
// digits, '-' or '_' (ids are etcd key elements and NATS subject tokens).
func CheckJobID(id string) error {
	if id == "" {
		return fmt.Errorf("api: job id is empty")
	}
	if len(id) > MaxJobIDLen {
		return fmt.Errorf("api: job id %q is %d characters long; at most %d are allowed", id, len(id), MaxJobIDLen)
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
		if !ok {
			return fmt.Errorf("api: job id %q: character %q is not allowed (letters, digits, '-' and '_' only)", id, r)
		}
	}
	return nil
}
