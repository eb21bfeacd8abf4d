// Package aem owns deckhand-agent's side of AEM content package deployment:
// the agent's aem config section, a client for the CRX Package Manager of
// the AEM instance on this host, and the handler of PackageInstall tasks.
//
// It deploys the way Adobe Cloud Manager does: each package is uploaded and
// installed through the Package Manager's HTTP API, in the order the
// packages' dependencies demand, and every install is verified with
// cmd=ls before the next one starts.
//
// Two rules shape the code:
//
//   - An install is never sent twice blindly. When an install request times
//     out, loses its connection or gets a 5xx, AEM may have installed the
//     package, may still be installing it, or may never have seen the
//     request. The client reconciles first (installstatus.jsp until AEM is
//     idle, then cmd=ls) and installs again only when the package is
//     verifiably not installed.
//   - Progress is journaled. After each package is verified installed the
//     handler journals the mark installed:<group:name:version>, so a run
//     interrupted by an agent crash resumes at the first package not
//     verified installed, and a package installed but not yet marked is
//     found installed by cmd=ls and skipped rather than installed again.
//
// Credentials come only from the agent's local config, never from a task.
package aem
