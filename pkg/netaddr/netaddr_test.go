package netaddr

import "testing"

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7443":   true,
		"127.9.9.9:1":      true,
		"[::1]:7443":       true,
		"localhost:80":     true,
		"10.0.0.1:7443":    false,
		"[::]:7443":        false,
		":7443":            false,
		"0.0.0.0:7443":     false,
		"example.com:7443": false,
		"127.0.0.1":        false,
		"":                 false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
