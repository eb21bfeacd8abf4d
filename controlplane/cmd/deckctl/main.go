// Command deckctl is the Deckhand admin CLI.
package main

import (
	"os"

	"github.com/deckhand-dev/deckhand/controlplane/deckctl"
)

func main() {
	os.Exit(deckctl.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
