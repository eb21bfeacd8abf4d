package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/aempkg"
)

// FaultKind names a kind of injected fault.
type FaultKind string

const (
	// FaultInstallFailure makes installs of Package (any package when empty)
	// fail with Message, reported like AEM reports a failed install
	// (success:false, HTTP 200). Nothing is recorded as installed.
	FaultInstallFailure FaultKind = "install-failure"
	// FaultSlowInstall makes installs of Package (any when empty) take Delay
	// before completing. The install completes server-side even when the
	// client gave up, so a client must reconcile with cmd=ls or
	// installstatus.jsp; installstatus.jsp reports finished:false meanwhile.
	FaultSlowInstall FaultKind = "slow-install"
	// FaultHTTP500 answers matching requests with an HTTP 500 error page.
	FaultHTTP500 FaultKind = "http-500"
	// FaultDrop closes the connection of matching requests without any response.
	FaultDrop FaultKind = "drop"
)

// Fault is one injected fault. Faults are checked in the order they were
// added; the first matching one of a kind applies.
type Fault struct {
	// ID is assigned by AddFault; use it to remove the fault.
	ID   int64     `json:"id"`
	Kind FaultKind `json:"kind"`
	// Package restricts install faults to one package id
	// (group:name:version); empty matches every package.
	Package string `json:"package,omitempty"`
	// Cmd restricts http-500 and drop to requests with that cmd: upload,
	// install, uninstall, delete, build, ls (service.jsp listing) or
	// installstatus; empty matches every Package Manager request. The legacy
	// one-shot upload counts as "upload". Requests without valid credentials
	// are answered 401 before faults are looked at.
	Cmd string `json:"cmd,omitempty"`
	// Count is how many more times the fault fires; 0 means until removed.
	Count int `json:"count,omitempty"`
	// Message is the failure message of an install-failure; empty means
	// "simulated install failure".
	Message string `json:"message,omitempty"`
	// Delay is the extra duration of a slow-install.
	Delay Duration `json:"delay,omitempty"`
	// After makes http-500 and drop fire after the request has been carried
	// out: the upload or install happens, only the response is lost. Without
	// it the request is not carried out.
	After bool `json:"after,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("1.5s"); a JSON number is read as nanoseconds.
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration must be a string like \"2s\" or nanoseconds: %s", b)
	}
	*d = Duration(n)
	return nil
}

func (f Fault) validate() error {
	switch f.Kind {
	case FaultInstallFailure, FaultSlowInstall:
		if f.Package != "" {
			if _, err := aempkg.ParseID(f.Package); err != nil {
				return err
			}
		}
		if f.Cmd != "" || f.After {
			return fmt.Errorf("%s faults take package, not cmd or after", f.Kind)
		}
		if f.Kind == FaultSlowInstall && f.Delay <= 0 {
			return errors.New("slow-install needs a positive delay")
		}
	case FaultHTTP500, FaultDrop:
		if f.Package != "" || f.Message != "" || f.Delay != 0 {
			return fmt.Errorf("%s faults take cmd, count and after only", f.Kind)
		}
		switch f.Cmd {
		case "", "upload", "install", "uninstall", "delete", "build", "ls", "installstatus":
		default:
			return fmt.Errorf("unknown cmd %q", f.Cmd)
		}
	default:
		return fmt.Errorf("unknown fault kind %q (want install-failure, slow-install, http-500 or drop)", f.Kind)
	}
	if f.Count < 0 {
		return errors.New("count must not be negative")
	}
	return nil
}

// AddFault validates f, gives it an ID and adds it.
func (s *Sim) AddFault(f Fault) (Fault, error) {
	if err := f.validate(); err != nil {
		return Fault{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	f.ID = s.nextID
	s.faults = append(s.faults, f)
	s.log.Info("fault added", "id", f.ID, "kind", f.Kind, "package", f.Package, "cmd", f.Cmd, "count", f.Count, "after", f.After)
	return f, nil
}

// RemoveFault removes the fault with the given ID and reports whether it existed.
func (s *Sim) RemoveFault(id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.ID == id {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
			return true
		}
	}
	return false
}

// ClearFaults removes every fault.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Faults returns the active faults with their remaining counts.
func (s *Sim) Faults() []Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Fault{}, s.faults...)
}

// takeFaultLocked finds the first fault of kind that matches and uses up one
// of its count. http-500 and drop match on cmd and on after (whether the
// request has been carried out); install faults match on the package id.
// s.mu must be held.
func (s *Sim) takeFaultLocked(kind FaultKind, cmd string, after bool) (Fault, bool) {
	return s.takeLocked(func(f *Fault) bool {
		return f.Kind == kind && (f.Cmd == "" || f.Cmd == cmd) && f.After == after
	})
}

// takeInstallFaultLocked is takeFaultLocked for install-failure and
// slow-install. s.mu must be held.
func (s *Sim) takeInstallFaultLocked(kind FaultKind, id aempkg.ID) (Fault, bool) {
	return s.takeLocked(func(f *Fault) bool {
		return f.Kind == kind && (f.Package == "" || f.Package == id.String())
	})
}

func (s *Sim) takeLocked(match func(*Fault) bool) (Fault, bool) {
	for i := range s.faults {
		f := &s.faults[i]
		if !match(f) {
			continue
		}
		taken := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
		}
		return taken, true
	}
	return Fault{}, false
}
