// Package netaddr holds address checks shared by the daemons and deckctl.
package netaddr

import "net"

// IsLoopback reports whether a host:port listen or dial address is on
// loopback: "localhost", 127.0.0.0/8 or ::1. An address without a port, or
// with a host name other than localhost, is not loopback: names resolve at
// dial time and may point anywhere.
func IsLoopback(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
