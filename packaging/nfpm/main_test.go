package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goreleaser/nfpm/v2"
)

func TestPackageVersion(t *testing.T) {
	for raw, want := range map[string]string{
		"v1.2.3":                 "1.2.3",
		"1.2.3":                  "1.2.3",
		"v1.2.3-dirty":           "1.2.3+dirty",
		"v1.2.3-4-gabc123":       "1.2.3+4.gabc123",
		"v1.2.3-4-gabc123-dirty": "1.2.3+4.gabc123.dirty",
		"v1.3.0-rc.1":            "1.3.0-rc.1",
		"2ff5d6e":                "0.0.0~dev.2ff5d6e",
		"2ff5d6e-dirty":          "0.0.0~dev.2ff5d6e.dirty",
		"dev":                    "0.0.0~dev",
	} {
		got, err := packageVersion(raw)
		if err != nil || got != want {
			t.Errorf("packageVersion(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	for _, bad := range []string{"", "v", "1.2.3 rm -rf", "../x", "1.2.3/4"} {
		if got, err := packageVersion(bad); err == nil {
			t.Errorf("packageVersion(%q) = %q, want an error", bad, got)
		}
	}
}

// Every file the packages name exists in the checkout, and nfpm accepts
// the description for both formats (it checks sources and modes).
func TestSpecSources(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, p := range packages() {
		for _, bn := range p.binaries {
			if err := os.WriteFile(filepath.Join(bin, bn), []byte("x"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	b := builder{root: root, bin: bin, version: "1.2.3", arch: "amd64", maintainer: defaultMaintainer}
	for _, p := range packages() {
		for _, format := range []string{"deb", "rpm"} {
			info := b.info(p, format)
			for _, s := range []string{info.Scripts.PostInstall, info.Scripts.PreRemove, info.Scripts.PostRemove} {
				if _, err := os.Stat(s); err != nil {
					t.Errorf("%s %s: script: %v", p.name, format, err)
				}
			}
			info = nfpm.WithDefaults(info)
			if err := nfpm.PrepareForPackager(info, format); err != nil {
				t.Errorf("%s %s: %v", p.name, format, err)
			}
		}
	}
}

func TestRefusesWrongBinaries(t *testing.T) {
	dir := t.TempDir()
	if err := checkBinary(filepath.Join(dir, "deckhand-agent"), "amd64"); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Errorf("missing binary: %v", err)
	}
	p := filepath.Join(dir, "script")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkBinary(p, "amd64"); err == nil {
		t.Error("a shell script passed as a Linux binary")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkBinary(self, "s390x"); err == nil {
		t.Error("unsupported arch accepted")
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage") {
		t.Errorf("no --version: exit %d, %q", code, errb.String())
	}
}
