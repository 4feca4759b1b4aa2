package nm_test

import (
	"context"
	"fmt"

	"github.com/rainbowduck/netmgr/nm"
)

// A UDP echo server and a client on one manager.
func Example() {
	m, err := nm.New(nm.Config{Workers: 2})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	l, err := nm.ListenUDP(context.Background(), m, "127.0.0.1:0", nm.UDPConfig{})
	if err != nil {
		panic(err)
	}
	go func() {
		for ev := range l.Datagrams() {
			if ev.Err != nil {
				continue // the final event: the listener was closed
			}
			ev.Handle.Send(ev.Data)
			ev.Handle.Detach()
		}
	}()

	h, err := nm.DialUDP(context.Background(), m, l.Addr().String(), nm.UDPConfig{})
	if err != nil {
		panic(err)
	}
	defer h.Detach()
	h.Send([]byte("hello"))
	ev := <-h.Read()
	fmt.Printf("%s %v\n", ev.Data, ev.Err)
	// Output: hello <nil>
}
