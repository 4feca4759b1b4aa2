//go:build !race

package dnsmsg_test

const raceDetector = false
