// Package dispatcher owns the end-to-end tests and benchmarks of dispatcher
// config deployment (issues 4 and 8) with everything real: the
// deckhand-agent binary (built once by e2e/topology.Binaries), enrolled
// with a join token and talking mutual TLS to a control plane running in
// the test process (controlplane/server/servertest), deploys
// DispatcherDeploy tasks to a private Apache (e2e/harness/apache).
//
// It has no non-test code; the tests are in the _test.go files (they use
// the deckhand-agent binary named by DECKHAND_AGENT_BIN when it is set):
//
//	go test -race ./e2e/dispatcher/
//	go test -run '^$' -bench . ./e2e/dispatcher/
//
// TestCrashRealAgent SIGKILLs the agent at failpoints (DECKHAND_FAILPOINTS)
// covering every phase of a deployment, good and failing, plus seeded
// random ones; E2E_DISPATCHER_KILLS sets the number of kills and
// E2E_DISPATCHER_SEED replays a run. TestSIGTERMDuringDeploy stops the
// agent while a slow configtest or reload runs. After each restart the
// live tree must be exactly the old or exactly the new config and Apache
// must serve it, and no backup may share a file with the live tree.
// TestBackupsListCLI runs `deckhand-agent backups list` on the agent's
// data dir. A failed test keeps its directory (agent data dir, logs,
// failpoint logs, a copy of the httpd dir) and logs where it is.
//
// BenchmarkDeployAgentVsScript compares a 2,000-file deployment through
// the agent with a bash script doing the same steps by hand;
// BenchmarkFetch1GiB measures the agent's peak RSS and throughput while it
// fetches a 1 GiB artifact, against curl reading the same file from a
// plain HTTP server on loopback.
package dispatcher
