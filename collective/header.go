package collective

import (
	"encoding/binary"
	"fmt"
)

// Every operation opens each link with a header naming it: the operation,
// its sequence number on this communicator, and the buffer's length. The
// receiver checks it against its own call, so a rank that has fallen behind
// (its peers gave up on an operation it had not joined yet) or that calls
// a different operation than its peers fails at once with an error naming
// both calls, instead of reading the bytes of another operation as its own.
const headerBytes = 16

// opHeader is the header's content; ranks making the same call build the
// same header.
type opHeader struct {
	op    byte   // opAllReduce, …
	seq   uint32 // operations that communicated before this one, plus one
	count uint64 // floats in the plan's buffer
}

// Operation codes in headers.
const (
	opAllReduce byte = 1 + iota
	opBroadcast
	opAllGather
	opBarrier
)

// headerMagic starts every header, so that a desynchronised stream is not
// read as one by accident.
const headerMagic = 0xF7

// opNames indexes operation codes.
var opNames = [...]string{opAllReduce: "allreduce", opBroadcast: "broadcast", opAllGather: "allgather", opBarrier: "barrier"}

func opCode(name string) byte {
	for op, n := range opNames {
		if n == name && n != "" {
			return byte(op)
		}
	}
	panic("collective: no operation code for " + name)
}

func opName(op byte) string {
	if int(op) < len(opNames) && opNames[op] != "" {
		return opNames[op]
	}
	return fmt.Sprintf("unknown operation %d", op)
}

func (h opHeader) encode(b *[headerBytes]byte) {
	*b = [headerBytes]byte{}
	b[0], b[1] = headerMagic, h.op
	binary.LittleEndian.PutUint32(b[4:], h.seq)
	binary.LittleEndian.PutUint64(b[8:], h.count)
}

func (h opHeader) String() string {
	return fmt.Sprintf("%s #%d of %d floats", opName(h.op), h.seq, h.count)
}

// checkHeader compares the header received from rank r−1 with this rank's
// own call and returns a *PeerLostError naming both when they differ.
func (r *ring) checkHeader(b *[headerBytes]byte) error {
	want := r.header
	if b[0] == headerMagic {
		got := opHeader{op: b[1], seq: binary.LittleEndian.Uint32(b[4:]), count: binary.LittleEndian.Uint64(b[8:])}
		if got == want {
			return nil
		}
		return &PeerLostError{Peer: r.prevRank(), Addr: r.addrs[r.prevRank()], Bucket: -1,
			Err: fmt.Errorf("rank %d sent %v while this rank runs %v: the ranks' calls diverged", r.prevRank(), got, want)}
	}
	return &PeerLostError{Peer: r.prevRank(), Addr: r.addrs[r.prevRank()], Bucket: -1,
		Err: fmt.Errorf("rank %d sent % x where the header of %v belongs: the stream is out of step", r.prevRank(), b[:], want)}
}
