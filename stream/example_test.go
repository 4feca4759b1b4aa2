package stream_test

import (
	"context"
	"fmt"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// A TCP echo server and a client; ListenTLS and DialTLS make it TLS.
func ExampleListen() {
	m, _ := nm.New(nm.Config{})
	defer m.Close()
	l, err := stream.Listen(context.Background(), m, "127.0.0.1:0", stream.Config{})
	if err != nil {
		panic(err)
	}
	go func() {
		for ev := range l.Conns() {
			if ev.Err != nil {
				return // the listener was closed
			}
			go func(h nm.Handle) {
				defer h.Detach()
				for ev := range h.Read() {
					if ev.Err != nil {
						return // nm.ErrEOF when the client is done
					}
					h.Send(ev.Data) // Data is valid until the next receive
				}
			}(ev.Handle)
		}
	}()

	h, err := stream.Dial(context.Background(), m, l.Addr().String(), stream.Config{})
	if err != nil {
		panic(err)
	}
	defer h.Detach()
	h.Send([]byte("hello"))
	ev := <-h.Read()
	fmt.Printf("%s %v\n", ev.Data, ev.Err)
	// Output: hello <nil>
}
