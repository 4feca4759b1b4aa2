package nm

// SetReplyHook makes the flusher of each of l's sockets call fn before
// each write, so that a test can hold a flush in progress.
func SetReplyHook(l *UDPListener, fn func()) {
	for _, s := range l.socks {
		s.out.mu.Lock()
		s.out.hook = fn
		s.out.mu.Unlock()
	}
}
