package main

// The deb and rpm packagers register themselves with nfpm. They are behind
// a build tag only because go.sum does not yet have their dependencies
// (github.com/blakesmith/ar, github.com/google/rpmpack, ...): without the
// tag the rest of this program still builds and is vetted with ./...
// Once `go get github.com/goreleaser/nfpm/v2/deb@v2.45.2
// github.com/goreleaser/nfpm/v2/rpm@v2.45.2` is in go.mod/go.sum, delete
// the build line above.
import (
	_ "github.com/goreleaser/nfpm/v2/deb"
	_ "github.com/goreleaser/nfpm/v2/rpm"
)
