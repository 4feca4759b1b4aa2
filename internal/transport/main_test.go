package transport

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if proto := os.Getenv(holdEnv); proto != "" {
		os.Exit(hold(proto))
	}
	goleak.VerifyTestMain(m)
}
