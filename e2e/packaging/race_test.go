//go:build race

package packaging_test

// raceEnabled: `make test` runs with -race, which has already compiled
// nearly every package the binaries need in race mode; building them with
// -race too reuses that build cache instead of compiling everything again.
const raceEnabled = true
