// Package build runs the pipeline's "Build & Unit Testing" and "Code
// Scanning" steps on a builder host: the Build and CodeScan task handlers.
//
// A Build task names a repository, a branch and a build profile; every
// command comes from the builder's own config (the `builder:` section), so
// the control plane can choose what to build, never what to run. The
// handler clones the branch into a fresh workspace with a clean
// environment, runs the profile's command there (inside a bubblewrap
// sandbox when one is available), streams the log to the server as
// progress lines, and uploads every file matching the artifacts glob
// (target/*.zip at any depth by default) over AgentService.UploadArtifact.
// The workspace is kept for the CodeScan task of the same execution, which
// runs a scan profile in it and returns the metrics file verbatim; the
// control plane judges the metrics.
//
// Both tasks are idempotent: a build interrupted by an agent crash is run
// again from a fresh workspace, and the server stores only uploads that
// arrived complete. See docs/builder.md.
package build
