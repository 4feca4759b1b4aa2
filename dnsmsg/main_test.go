package dnsmsg_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchClientEnv); spec != "" {
		os.Exit(runBenchClient(spec))
	}
	goleak.VerifyTestMain(m)
}
