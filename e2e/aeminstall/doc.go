// Package aeminstall owns the end-to-end tests of AEM package deployment
// (issue 5): the real deckhand-agent binary, enrolled with a join token and
// talking mutual TLS to a control plane running in the test process, runs
// PackageInstall tasks against simulated AEM instances (e2e/aemsim), and the
// tests assert what AEM saw — install order, install counts, requests — and
// what the control plane recorded.
//
// It has no non-test code; the tests are in the _test.go files:
//
//	go test -race ./e2e/aeminstall/
//
// TestMain builds deckhand-agent once (with -race when the tests run with
// -race, so a data race in the agent fails the test that provoked it), or
// uses the binary named by DECKHAND_AGENT_BIN. Crash tests kill the agent
// at seeded failpoints; the seed is logged and DECKHAND_E2E_SEED=N replays
// it. A failed test keeps its data directory (agent journals and logs, AEM
// simulator state) and logs where it is.
package aeminstall
