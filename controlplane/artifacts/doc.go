// Package artifacts owns the control plane's build artifacts: the
// content-addressed blob store, the classification of every pushed zip
// (AEM content package or dispatcher configuration, by pkg/classify), and
// artifact sets, the checked and ordered group of artifacts one deployment
// installs. It serves them over gRPC (ArtifactService) and to the rollout
// and pipeline code through Sets.
//
// Blobs are files named by their sha256 under <data_dir>/artifacts, written
// once through a temp file, fsync and rename, so a blob that exists is
// always complete.
//
// Metadata lives in two buckets of the control-plane store (kv.Backend;
// records are JSON with a "v" field, version 1; a change of shape bumps it
// and readers migrate explicitly):
//
//	artifacts/
//	  <sha256 hex>  -> artifactRecord: size, name (as last pushed), kind
//	                   ("aem-package" | "dispatcher-config"), package id and
//	                   declared dependencies (AEM packages), first and last
//	                   push time. Only classified artifacts get a record.
//	artifact_sets/
//	  <set id>      -> setRecord: version, the sorted digests (the set's
//	                   identity), creator and time, and a snapshot of its
//	                   artifacts: AEM packages in install order, the
//	                   dispatcher configuration, external dependencies.
//
// A set id is "set-" followed by the first 12 hex digits of the sha256 over
// the version and the sorted, de-duplicated digests. The same version and
// digests therefore always name the same set, and creating it again returns
// the stored one; a different set whose id collides is refused rather than
// overwritten.
//
// Blobs are never deleted except one this package has just written for a
// push it refused; garbage collection of unused artifacts is not done yet.
package artifacts
