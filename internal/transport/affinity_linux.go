package transport

import "golang.org/x/sys/unix"

// PinThread binds the calling OS thread to one CPU. The caller must have
// locked its goroutine to the thread (runtime.LockOSThread) first, or the
// pin applies to whatever goroutine the thread runs next.
func PinThread(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return errf("pin thread to cpu %d: %w", cpu, err)
	}
	return nil
}

// AllowedCPUs returns the CPUs this process may run on, in order.
func AllowedCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var cpus []int
	for i := 0; i < len(set)*64 && len(cpus) < set.Count(); i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus
}
