//go:build !race

package aeminstall_test

// raceEnabled: the tests run without -race, and so does the agent.
const raceEnabled = false
