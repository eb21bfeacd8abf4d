package lb

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// This file speaks HAProxy's runtime API (the "stats socket ... level
// admin" unix socket) and parses the answers the haproxy driver uses.
// Formats are those of HAProxy 2.6; parsing goes by header names, never by
// column position, because columns are appended between releases.

// maxAPIResponse bounds how much of an answer is read. "show stat" for the
// whole process grows with the number of proxies; the driver only asks for
// one backend, so this is generous.
const maxAPIResponse = 16 << 20

// apiError is HAProxy answering a command with a message instead of the
// expected output, e.g. "No such server." or "Permission denied".
type apiError struct {
	cmd, answer string
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("lb/haproxy: %q: HAProxy answered %q", e.cmd, e.answer)
	if strings.Contains(e.answer, "Permission denied") {
		msg += " (is the stats socket configured with \"level admin\"?)"
	}
	return msg
}

// runtimeAPI sends one command per connection, as the non-interactive
// socket protocol expects: HAProxy answers and closes.
type runtimeAPI struct {
	socket  string
	timeout time.Duration // per command, connect to last byte
}

func (a runtimeAPI) do(ctx context.Context, cmd string) (string, error) {
	// The cause tells our own per-command bound apart from the caller's
	// ctx ending: context.Cause returns the caller's error in that case.
	ctx, cancel := context.WithTimeoutCause(ctx, a.timeout,
		fmt.Errorf("%w: no answer within command_timeout %v", ErrTimeout, a.timeout))
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", a.socket)
	if err != nil {
		return "", fmt.Errorf("lb/haproxy: connect to runtime API socket %s: %w", a.socket, ctxCause(ctx, err))
	}
	defer conn.Close()
	// ctx alone bounds the I/O: when it ends (our timeout, or the caller's
	// deadline or cancel) AfterFunc expires the connection. Not setting
	// the deadline from ctx.Deadline() directly is deliberate: the socket
	// could then time out a moment before ctx reports why, and the error
	// would say only "i/o timeout".
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", fmt.Errorf("lb/haproxy: %q on %s: %w", cmd, a.socket, ctxCause(ctx, err))
	}
	b, err := io.ReadAll(io.LimitReader(conn, maxAPIResponse+1))
	if err != nil {
		return "", fmt.Errorf("lb/haproxy: %q on %s: %w", cmd, a.socket, ctxCause(ctx, err))
	}
	if len(b) > maxAPIResponse {
		return "", fmt.Errorf("lb/haproxy: %q: answer larger than %d bytes", cmd, maxAPIResponse)
	}
	return string(b), nil
}

// ctxCause returns why ctx ended when it has (an I/O error caused by our
// deadline says only "i/o timeout"), else err.
func ctxCause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// setServerState runs "set server BE/SRV state STATE". HAProxy answers an
// empty line on success and a message otherwise.
func (a runtimeAPI) setServerState(ctx context.Context, backend, server, state string) error {
	cmd := fmt.Sprintf("set server %s/%s state %s", backend, server, state)
	out, err := a.do(ctx, cmd)
	if err != nil {
		return err
	}
	if msg := strings.TrimSpace(out); msg != "" {
		return &apiError{cmd: cmd, answer: msg}
	}
	return nil
}

// serverStat is what the driver needs from one server's "show stat" row.
type serverStat struct {
	Status      string // status column: "UP", "UP 1/2", "DOWN", "DRAIN", "MAINT", "no check", ...
	Scur        int    // current sessions on the server
	Qcur        int    // requests queued for this server
	CheckStatus string // e.g. "L7OK", "L4CON"
	CheckDesc   string // e.g. "Layer7 check passed"
}

// showServerStat runs "show stat BACKEND 4 -1" (type 4 = servers only, all
// server ids) and returns server's row.
func (a runtimeAPI) showServerStat(ctx context.Context, backend, server string) (serverStat, error) {
	cmd := fmt.Sprintf("show stat %s 4 -1", backend)
	out, err := a.do(ctx, cmd)
	if err != nil {
		return serverStat{}, err
	}
	tab, err := parseShowStat(out)
	if err != nil {
		return serverStat{}, fmt.Errorf("lb/haproxy: %q: %w", cmd, err)
	}
	st, err := tab.server(backend, server)
	if err != nil {
		return serverStat{}, fmt.Errorf("lb/haproxy: %q: %w", cmd, err)
	}
	return st, nil
}

// statTable is parsed "show stat" CSV output.
type statTable struct {
	cols map[string]int // header name -> index
	rows [][]string
}

// parseShowStat parses "show stat" output: a header line
// "# pxname,svname,qcur,...," then one CSV record per proxy/server, ended
// by an empty line. Anything not starting with "# " is HAProxy refusing the
// command (e.g. "No such proxy.") and is returned as an *apiError-like
// message. Text fields such as check_desc are CSV-quoted by HAProxy when
// needed, hence encoding/csv rather than splitting on commas.
func parseShowStat(out string) (*statTable, error) {
	if !strings.HasPrefix(out, "# ") {
		return nil, fmt.Errorf("HAProxy answered %q, not a stat header", strings.TrimSpace(out))
	}
	r := csv.NewReader(strings.NewReader(out[len("# "):]))
	r.FieldsPerRecord = -1 // rows of different proxy types may differ
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("show stat header: %w", err)
	}
	tab := &statTable{cols: make(map[string]int, len(header))}
	for i, h := range header {
		if h != "" {
			if _, dup := tab.cols[h]; !dup {
				tab.cols[h] = i
			}
		}
	}
	for _, need := range []string{"pxname", "svname", "status", "scur"} {
		if _, ok := tab.cols[need]; !ok {
			return nil, fmt.Errorf("show stat header has no %q column", need)
		}
	}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("show stat: %w", err)
		}
		tab.rows = append(tab.rows, rec)
	}
	return tab, nil
}

// field returns column name of rec, or "" when the row is short.
func (t *statTable) field(rec []string, name string) string {
	i, ok := t.cols[name]
	if !ok || i >= len(rec) {
		return ""
	}
	return rec[i]
}

func (t *statTable) server(backend, server string) (serverStat, error) {
	for _, rec := range t.rows {
		if t.field(rec, "pxname") != backend || t.field(rec, "svname") != server {
			continue
		}
		st := serverStat{
			Status: t.field(rec, "status"),
			// HAProxy prefixes check_status with "* " while a check
			// is running; the result is the same word without it.
			CheckStatus: strings.TrimPrefix(t.field(rec, "check_status"), "* "),
			CheckDesc:   t.field(rec, "check_desc"),
		}
		var err error
		if st.Scur, err = strconv.Atoi(t.field(rec, "scur")); err != nil {
			return serverStat{}, fmt.Errorf("server %s/%s: scur %q is not a number", backend, server, t.field(rec, "scur"))
		}
		// qcur is empty for rows that cannot queue; treat that as 0.
		if q := t.field(rec, "qcur"); q != "" {
			if st.Qcur, err = strconv.Atoi(q); err != nil {
				return serverStat{}, fmt.Errorf("server %s/%s: qcur %q is not a number", backend, server, q)
			}
		}
		return st, nil
	}
	return serverStat{}, fmt.Errorf("no server %s/%s in show stat", backend, server)
}

// Admin state bits of "show servers state" (srv_admin_state), from
// HAProxy's enum srv_admin in include/haproxy/server-t.h.
const (
	admForcedMaint    = 0x01 // "set server ... state maint"
	admInheritedMaint = 0x02 // tracked server is in maint
	admConfigMaint    = 0x04 // "disabled" in the config
	admForcedDrain    = 0x08 // "set server ... state drain"
	admInheritedDrain = 0x10 // tracked server is draining
	admResolvMaint    = 0x20 // DNS resolution failed
	admAnyMaint       = admForcedMaint | admInheritedMaint | admConfigMaint | admResolvMaint
	admAnyDrain       = admForcedDrain | admInheritedDrain
)

// serverState is what the driver needs from "show servers state".
type serverState struct {
	OpState    int // srv_op_state: 0 stopped, 1 starting, 2 running, 3 stopping
	AdminState int // srv_admin_state bits, see adm* constants
}

// showServersState runs "show servers state BACKEND" and returns server's
// row.
func (a runtimeAPI) showServersState(ctx context.Context, backend, server string) (serverState, error) {
	cmd := "show servers state " + backend
	out, err := a.do(ctx, cmd)
	if err != nil {
		return serverState{}, err
	}
	st, err := parseServersState(out, backend, server)
	if err != nil {
		return serverState{}, fmt.Errorf("lb/haproxy: %q: %w", cmd, err)
	}
	return st, nil
}

// parseServersState parses "show servers state" output: a format version
// line ("1"), a header "# be_id be_name srv_id srv_name ...", then one
// space-separated row per server. Anything else first is HAProxy refusing
// the command (e.g. "Can't find backend.").
func parseServersState(out, backend, server string) (serverState, error) {
	lines := strings.Split(out, "\n")
	if len(lines) < 2 {
		return serverState{}, fmt.Errorf("HAProxy answered %q", strings.TrimSpace(out))
	}
	if _, err := strconv.Atoi(strings.TrimSpace(lines[0])); err != nil {
		return serverState{}, fmt.Errorf("HAProxy answered %q", strings.TrimSpace(out))
	}
	if !strings.HasPrefix(lines[1], "# ") {
		return serverState{}, fmt.Errorf("no header line after version %q", strings.TrimSpace(lines[0]))
	}
	cols := map[string]int{}
	for i, h := range strings.Fields(strings.TrimPrefix(lines[1], "# ")) {
		cols[h] = i
	}
	for _, need := range []string{"be_name", "srv_name", "srv_op_state", "srv_admin_state"} {
		if _, ok := cols[need]; !ok {
			return serverState{}, fmt.Errorf("header has no %q column", need)
		}
	}
	get := func(f []string, name string) string {
		if i := cols[name]; i < len(f) {
			return f[i]
		}
		return ""
	}
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		if len(f) == 0 || get(f, "be_name") != backend || get(f, "srv_name") != server {
			continue
		}
		op, err := strconv.Atoi(get(f, "srv_op_state"))
		if err != nil {
			return serverState{}, fmt.Errorf("server %s/%s: srv_op_state %q is not a number", backend, server, get(f, "srv_op_state"))
		}
		adm, err := strconv.Atoi(get(f, "srv_admin_state"))
		if err != nil {
			return serverState{}, fmt.Errorf("server %s/%s: srv_admin_state %q is not a number", backend, server, get(f, "srv_admin_state"))
		}
		return serverState{OpState: op, AdminState: adm}, nil
	}
	return serverState{}, fmt.Errorf("no server %s/%s", backend, server)
}

// classify maps HAProxy's view of a server to a State. The admin bits win
// because they are what an operator or this driver set; the status column
// alone says "DOWN" for a drained server that also fails its checks.
func classify(st serverStat, adm int) State {
	switch {
	case adm&admAnyMaint != 0 || strings.HasPrefix(st.Status, "MAINT"):
		return StateDetached
	case adm&admAnyDrain != 0 || strings.HasPrefix(st.Status, "DRAIN"):
		return StateDraining
	case st.Status == "UP" || st.Status == "no check":
		return StateInService
	// NOLB: up but weight 0 or "http-check disable-on-404": no new
	// requests, so it behaves like draining.
	case strings.HasPrefix(st.Status, "NOLB"):
		return StateDraining
	// "UP 1/2" (going down, or just set ready) and "DOWN 1/2" (going up).
	case strings.HasPrefix(st.Status, "UP "), isTransitional(st.Status, "DOWN "):
		return StateChecking
	case strings.HasPrefix(st.Status, "DOWN"):
		return StateDown
	}
	return StateUnknown
}

// isTransitional reports "<prefix>N/M", HAProxy's notation for a state that
// health checks are moving away from.
func isTransitional(status, prefix string) bool {
	rest, ok := strings.CutPrefix(status, prefix)
	if !ok {
		return false
	}
	a, b, ok := strings.Cut(rest, "/")
	if !ok {
		return false
	}
	_, err1 := strconv.Atoi(a)
	_, err2 := strconv.Atoi(b)
	return err1 == nil && err2 == nil
}
