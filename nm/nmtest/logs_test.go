package nmtest

import (
	"testing"
	"time"
)

func TestLogs(t *testing.T) {
	logs := NewLogs()
	log := logs.Logger().With("listener", "a")
	done := make(chan struct{})
	go func() {
		defer close(done)
		log.Info("other")
		log.Warn("wanted", "n", 3)
	}()
	r := logs.Wait(t, "wanted", time.Minute)
	<-done
	if v, ok := Attr(r, "n"); !ok || v.Int64() != 3 {
		t.Errorf("n = %v, %v; want 3", v, ok)
	}
	if v, _ := Attr(r, "listener"); v.String() != "a" {
		t.Errorf("With's attribute: %v; want a", v)
	}
	if _, ok := Attr(r, "missing"); ok {
		t.Error("Attr found an attribute the record lacks")
	}
	if n := len(logs.Records("other")); n != 1 {
		t.Errorf("%d records \"other\"; want 1", n)
	}
	if f := run(t, func(tb testing.TB) { logs.Wait(tb, "never", 10*time.Millisecond) }); f == "" {
		t.Error("Wait accepted a record that never came")
	}
}
