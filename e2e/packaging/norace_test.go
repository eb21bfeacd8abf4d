//go:build !race

package packaging_test

// raceEnabled: the tests run without -race; so are the binaries built.
const raceEnabled = false
