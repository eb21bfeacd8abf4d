package dispatcher_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/pkg/task"
)

// procStatus reads a field of /proc/<pid>/status in KiB (VmHWM: the
// peak resident set size; VmRSS: the current one).
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// randomReader is n bytes of ChaCha8 output: incompressible, never zeros.
type randomReader struct {
	src  *rand.ChaCha8
	left int64
}

func (r *randomReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, _ := r.src.Read(p)
	r.left -= int64(n)
	return n, nil
}

// BenchmarkFetch1GiB has the real agent fetch a generated 1 GiB artifact
// (pseudo-random bytes) from the control plane's blob store over
// FetchArtifact (mutual TLS gRPC on loopback), as the first step of a
// DispatcherDeploy, and measures:
//
//   - the agent's peak RSS: VmHWM of /proc/<pid>/status when the artifact
//     is in place (the process's whole life up to then; goal ≤ 50 MiB);
//   - fetch throughput: from Assign until the verified artifact is renamed
//     into place (streamed to disk, sha256-checked, fsynced), against curl
//     downloading the same blob file from a plain net/http file server on
//     loopback into a file on the same filesystem (no TLS, no hashing, no
//     fsync): the ratio agent/curl (goal ≥ 0.7). "transfer" figures stop
//     the agent's clock when the last byte is written, before its fsync.
//
// The task itself then fails (the bytes are not a zip); that is not what
// is measured. E2E_FETCH_ROUNDS sets the rounds (default 3, medians); each
// round runs a fresh agent process. The 1 GiB blob, the agent's copy and
// curl's copy are deleted.
func BenchmarkFetch1GiB(b *testing.B) {
	if _, err := exec.LookPath("curl"); err != nil {
		b.Skip("curl is not installed")
	}
	const size = 1 << 30
	h := newHost(b, hostOptions{logLevel: "info"})
	rounds := envInt(b, "E2E_FETCH_ROUNDS", 3)

	// The blob: generated straight into the store (untimed).
	start := time.Now()
	sum, n, err := h.cp.Server.Blobs().Put(&randomReader{src: rand.NewChaCha8([32]byte{'d', 'e', 'c', 'k'}), left: size})
	require.NoError(b, err)
	require.EqualValues(b, size, n)
	blob, _, err := h.cp.Server.Blobs().Open(sum)
	require.NoError(b, err)
	blobPath := blob.Name()
	blob.Close()
	b.Cleanup(func() { os.Remove(blobPath) })
	b.Logf("generated and stored 1 GiB in %v", time.Since(start).Round(time.Millisecond))

	// The plain baseline's server: the same file over HTTP on loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, blobPath) })}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	url := "http://" + ln.Addr().String() + "/blob"

	art := filepath.Join(h.dataDir, "artifacts", sum)
	var agentT, transferT, curlT []time.Duration
	var peakKiB int64
	for i := 0; i < rounds; i++ {
		p := h.start()
		pid := p.cmd.Process.Pid
		require.Eventually(b, func() bool { return h.cp.Server.Fleet().Online(hostID) }, 30*time.Second, 5*time.Millisecond)
		start := time.Now()
		id := h.assign(fmt.Sprintf("fetch-%d", i), task.Artifact{SHA256: sum, Size: n, Name: "big.zip"})
		var transfer time.Duration
		for {
			if _, err := os.Stat(art); err == nil {
				break
			}
			if transfer == 0 {
				if st, err := os.Stat(art + ".partial"); err == nil && st.Size() == size {
					transfer = time.Since(start)
				}
			}
			require.False(b, p.exited(), "the agent died during the fetch")
			require.Less(b, time.Since(start), 5*time.Minute, "the fetch did not finish")
			time.Sleep(time.Millisecond) // poll; the fetch takes seconds
		}
		took := time.Since(start)
		if transfer == 0 {
			transfer = took
		}
		hwm, err := procStatus(pid, "VmHWM")
		require.NoError(b, err)
		peakKiB = max(peakKiB, hwm)
		r := h.await(id, 5*time.Minute)
		require.Error(b, r.Err(), "1 GiB of random bytes is not a dispatcher config")
		require.Contains(b, r.Error, "rejected")
		p.stop()
		require.NoError(b, os.Remove(art))
		agentT, transferT = append(agentT, took), append(transferT, transfer)

		out := filepath.Join(h.dir, "curl.out")
		start = time.Now()
		cout, err := exec.Command("curl", "-sS", "--fail", "-o", out, url).CombinedOutput()
		ct := time.Since(start)
		require.NoError(b, err, "%s", cout)
		st, err := os.Stat(out)
		require.NoError(b, err)
		require.EqualValues(b, size, st.Size())
		require.NoError(b, os.Remove(out))
		curlT = append(curlT, ct)
		b.Logf("round %d: agent %v (last byte written at %v), peak RSS %.1f MiB; curl %v", i+1, took.Round(time.Millisecond), transfer.Round(time.Millisecond), float64(hwm)/1024, ct.Round(time.Millisecond))
	}
	mbps := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	ma, mt, mc := median(agentT), median(transferT), median(curlT)
	b.Logf("medians: agent %.0f MiB/s (transfer %.0f MiB/s), curl %.0f MiB/s; ratio %.2f (transfer %.2f; goal >= 0.7); peak RSS %.1f MiB (goal <= 50)",
		mbps(ma), mbps(mt), mbps(mc), mbps(ma)/mbps(mc), mbps(mt)/mbps(mc), float64(peakKiB)/1024)
	b.ReportMetric(float64(ma.Nanoseconds()), "ns/op")
	b.ReportMetric(float64(peakKiB)/1024, "peak-rss-MiB")
	b.ReportMetric(mbps(ma), "agent-MiB/s")
	b.ReportMetric(mbps(mt), "agent-transfer-MiB/s")
	b.ReportMetric(mbps(mc), "curl-MiB/s")
	b.ReportMetric(mbps(ma)/mbps(mc), "agent/curl")
	b.ReportMetric(mbps(mt)/mbps(mc), "transfer/curl")
}
