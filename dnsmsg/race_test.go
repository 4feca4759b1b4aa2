//go:build race

package dnsmsg_test

// raceDetector tells tests that quic-go's own data races would fail them
// (see skipUnderRace).
const raceDetector = true
