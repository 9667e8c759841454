package cuda

import (
	"fmt"
	"syscall"
)

// reserveHandle reserves bytes of address space that may not be accessed:
// the handles of AllocActivations. MAP_NORESERVE and PROT_NONE commit no
// memory, so a handle costs address space only.
func reserveHandle(bytes int) ([]byte, error) {
	b, err := syscall.Mmap(-1, 0, bytes, syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("reserving %d bytes of address space: %w", bytes, err)
	}
	return b, nil
}

func releaseHandle(b []byte) error { return syscall.Munmap(b) }
