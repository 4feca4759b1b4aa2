package transport

import "runtime"

// lockThread locks the goroutine to its thread for good: the thread exits
// with the goroutine, taking its affinity with it.
func lockThread() { runtime.LockOSThread() }
