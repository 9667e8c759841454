package devices

import (
	"strconv"
	"strings"
)

// visibleEnv is the variable the CUDA driver filters devices with.
const visibleEnv = "CUDA_VISIBLE_DEVICES"

// applyVisible returns the GPUs a CUDA process sees, in the order it sees
// them, given CUDA_VISIBLE_DEVICES (value, set) and every GPU NVML reports
// (in NVML order). It follows the driver's rules:
//   - unset: every device, in NVML order;
//   - set but empty: no device;
//   - a comma-separated list of indices, full UUIDs ("GPU-…") or unique UUID
//     prefixes; parsing stops at the first entry that names no device (so
//     "0,1,-1,2" means "0,1"), and a device listed twice ends the list too.
//
// MIG instances ("MIG-…") are not supported and end the list like any
// unknown entry. Ordinals are renumbered from 0 in list order.
func applyVisible(value string, set bool, all []GPU) []GPU {
	if !set {
		out := make([]GPU, len(all))
		for i, g := range all {
			g.Ordinal = i
			out[i] = g
		}
		return out
	}
	var out []GPU
	seen := map[int]bool{}
	for _, entry := range strings.Split(value, ",") {
		entry = strings.TrimSpace(entry)
		idx := lookupVisibleEntry(entry, all)
		if idx < 0 || seen[idx] {
			break
		}
		seen[idx] = true
		g := all[idx]
		g.Ordinal = len(out)
		out = append(out, g)
	}
	return out
}

// lookupVisibleEntry maps one CUDA_VISIBLE_DEVICES entry to a position in
// all, or -1.
func lookupVisibleEntry(entry string, all []GPU) int {
	if entry == "" {
		return -1
	}
	if n, err := strconv.Atoi(entry); err == nil {
		if n < 0 || n >= len(all) {
			return -1
		}
		return n
	}
	if !strings.HasPrefix(strings.ToUpper(entry), "GPU-") {
		return -1
	}
	found := -1
	for i, g := range all {
		if strings.HasPrefix(strings.ToLower(g.UUID), strings.ToLower(entry)) {
			if found >= 0 {
				return -1 // ambiguous prefix: the driver refuses it too
			}
			found = i
		}
	}
	return found
}
