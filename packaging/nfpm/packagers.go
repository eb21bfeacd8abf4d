package main

// The deb and rpm packagers register themselves with nfpm when imported.
import (
	_ "github.com/goreleaser/nfpm/v2/deb"
	_ "github.com/goreleaser/nfpm/v2/rpm"
)
