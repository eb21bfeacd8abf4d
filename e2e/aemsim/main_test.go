package main

import (
	"bufio"
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
)

// TestBinarySignalsAndRestart runs the real binary: it serves with the
// given credentials, stops cleanly on SIGTERM and SIGINT, and keeps its
// state across the restart.
func TestBinarySignalsAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "aemsim")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())
	data := t.TempDir()

	addr, stop := runBinary(t, bin, data)
	base := "http://" + addr

	// Wrong credentials are refused, right ones upload and install.
	req, _ := http.NewRequest(http.MethodGet, base+"/crx/packmgr/service.jsp?cmd=ls", nil)
	req.SetBasicAuth("admin", "nope")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("package", "a.zip")
	require.NoError(t, err)
	_, err = fw.Write(aempkgtest.Package(aempkgtest.Spec{Group: "g", Name: "a", Version: "1.0"}))
	require.NoError(t, err)
	require.NoError(t, mw.Close())
	req, _ = http.NewRequest(http.MethodPost, base+"/crx/packmgr/service/.json?cmd=upload", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.SetBasicAuth("admin", "pw")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), `"success":true`)

	req, _ = http.NewRequest(http.MethodPost, base+"/crx/packmgr/service/.json/etc/packages/g/a-1.0.zip?cmd=install", nil)
	req.SetBasicAuth("admin", "pw")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), `"success":true`)

	stop(syscall.SIGTERM)

	addr, stop = runBinary(t, bin, data)
	req, _ = http.NewRequest(http.MethodGet, "http://"+addr+"/crx/packmgr/service.jsp?cmd=ls", nil)
	req.SetBasicAuth("admin", "pw")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), "<lastUnpackedBy>admin</lastUnpackedBy>")
	http.DefaultClient.CloseIdleConnections()
	stop(syscall.SIGINT)
}

var listeningRE = regexp.MustCompile(`listening: addr=(\S+)`)

// runBinary starts the simulator on a free port and returns its address and
// a function that sends sig and requires a clean exit.
func runBinary(t *testing.T, bin, data string) (string, func(os.Signal)) {
	t.Helper()
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--user", "admin", "--password", "pw", "--data", data, "--shutdown-timeout", "5s")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var logs strings.Builder
	addrc := make(chan string, 1)
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			logs.WriteString(line + "\n")
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				addrc <- m[1]
			}
		}
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("aemsim did not report its address")
	}
	stop := func(sig os.Signal) {
		t.Helper()
		require.NoError(t, cmd.Process.Signal(sig))
		waitc := make(chan error, 1)
		go func() { <-scanDone; waitc <- cmd.Wait() }()
		select {
		case err := <-waitc:
			require.NoError(t, err, "logs:\n%s", logs.String())
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("aemsim did not stop on %v", sig)
		}
		require.Contains(t, logs.String(), "stopped")
	}
	return addr, stop
}
