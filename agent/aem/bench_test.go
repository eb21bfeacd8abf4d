package aem_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/deckhand-dev/deckhand/agent/aem"
	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/simtest"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
)

// memProgress stands in for a worker task: marks in memory, no journal.
type memProgress struct{ marks []journal.Mark }

func (p *memProgress) Attempt() int { return 1 }
func (p *memProgress) Entry() journal.Entry {
	return journal.Entry{Attempts: 1, Marks: p.marks}
}
func (p *memProgress) Mark(name string, data []byte) error {
	p.marks = append(p.marks, journal.Mark{Name: name, At: time.Now(), Data: data})
	return nil
}
func (p *memProgress) Logf(string, ...any) {}

// BenchmarkInstall50 installs 50 generated packages — a chain of 25 and a
// fan-out of 25 on the chain's root, given in reverse so the handler must
// order them — into a fresh simulator without faults, through the handler
// and client over loopback HTTP. ns/package is the agent's and the
// simulator's per-package cost (fetch from disk, metadata, upload,
// install, cmd=ls verification), a baseline for later changes; a real AEM
// takes far longer per install.
func BenchmarkInstall50(b *testing.B) {
	const chain, fan = 25, 25
	dir := b.TempDir()
	fetch := &fakeFetcher{paths: map[string]string{}}
	var arts []task.Artifact
	add := func(name, deps string) {
		data := aempkgtest.Package(aempkgtest.Spec{Group: "bench", Name: name, Version: "1.0.0", Dependencies: deps})
		sum := sha256.Sum256(data)
		d := hex.EncodeToString(sum[:])
		fetch.paths[d] = aempkgtest.WriteFile(b, dir, d, data)
		arts = append([]task.Artifact{{SHA256: d, Size: int64(len(data)), Name: name}}, arts...)
	}
	for i := range chain {
		deps := ""
		if i > 0 {
			deps = fmt.Sprintf("bench:chain-%02d:[1.0,2.0)", i-1)
		}
		add(fmt.Sprintf("chain-%02d", i), deps)
	}
	for i := range fan {
		add(fmt.Sprintf("fan-%02d", i), "bench:chain-00:1.0.0")
	}

	var total time.Duration
	runs := 0
	for b.Loop() {
		runs++
		b.StopTimer()
		s := simtest.New(b, func(c *sim.Config) {
			c.Logger = hclog.NewNullLogger()
			c.DependencyHandling = sim.DepStrict
		})
		h, err := aem.NewHandler(&aem.Config{BaseURL: s.URL, User: simtest.User, Password: simtest.Password,
			PollInterval: yamlconf.Duration(10 * time.Millisecond)}, fetch, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		out, err := aem.RunWith(context.Background(), h, &memProgress{}, arts)
		total += time.Since(start)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if len(out.Packages) != chain+fan {
			b.Fatalf("%d outcomes, want %d", len(out.Packages), chain+fan)
		}
		for _, n := range s.InstallCounts() {
			if n != 1 {
				b.Fatalf("install counts %v", s.InstallCounts())
			}
		}
		h.Client.Close()
		s.Stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(runs*(chain+fan)), "ns/package")
}
