//go:build !linux

package transport

// PinThread is a no-op on platforms without thread affinity.
func PinThread(cpu int) error { return nil }

// AllowedCPUs returns nil where the platform does not report affinity.
func AllowedCPUs() []int { return nil }
