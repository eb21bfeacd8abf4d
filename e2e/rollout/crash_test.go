package rollout_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/e2e/topology"
	"github.com/stretchr/testify/require"
)

// TestControlPlaneKilledDuringProductionRollouts SIGKILLs deckhand-server
// at a seeded random moment of each of several production rollouts, starts
// it again, and checks that the same deployment completes: invariants
// hold, no AEM package is installed twice, and the site never fails a
// request. E2E_CRASH_POINTS sets the number of kills (default 20);
// E2E_CRASH_SEED replays a run.
func TestControlPlaneKilledDuringProductionRollouts(t *testing.T) {
	points := 20
	if v, err := strconv.Atoi(os.Getenv("E2E_CRASH_POINTS")); err == nil && v > 0 {
		points = v
	} else if testing.Short() {
		points = 4
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("E2E_CRASH_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("crash seed %d (replay with E2E_CRASH_SEED=%d), %d kill points", seed, seed, points)
	rng := rand.New(rand.NewPCG(seed, 1))

	tp := topology.Start(t, topology.Options{InvalidatePaths: []string{"/content"}})
	dumpOnFailure(t, tp)
	load := topology.Hammer(tp.HAProxy.URL+"/page", 3)
	defer func() {
		res := load.Stop()
		require.Zero(t, res.Failed, "failed requests while the control plane crashed: %v", res.Failures)
	}()

	// A full rollout takes a few seconds here; kill anywhere inside it,
	// including before the first step and after the last.
	for i := 0; i < points; i++ {
		version := i + 2
		set := push(t, tp, fmt.Sprint(version), site(t, version%3+1, false))
		out, err := tp.Deckctl("deploy", "--env", tp.Env, "--artifacts", set, "--detach", "-o", "json")
		require.NoError(t, err)
		var started struct {
			ID string `json:"id"`
		}
		require.NoError(t, json.Unmarshal(out, &started))
		delay := time.Duration(rng.Int64N(int64(4 * time.Second)))
		time.Sleep(delay)
		tp.Server.Kill()
		t.Logf("kill %d: SIGKILL after %s during %s", i+1, delay.Round(time.Millisecond), started.ID)
		tp.StartServer()

		state := waitDeployment(t, tp, started.ID)
		require.Equal(t, "SUCCEEDED", state, "deployment %s after a kill at %s", started.ID, delay)
		checkInvariants(t, tp, started.ID)
		want := fmt.Sprintf("version %d\n", version%3+1)
		require.Equal(t, want, get(t, tp.HAProxy.URL+"/page"))
	}
	for _, host := range []string{"author1", "publish1", "publish2"} {
		for pkg, n := range installs(t, tp.AEM[host]) {
			require.Equal(t, 1, n, "%s: %s installed %d times", host, pkg, n)
		}
	}
}

func waitDeployment(t *testing.T, tp *topology.Topology, id string) string {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		out, err := tp.Deckctl("deployments", "show", id, "-o", "json")
		if err == nil {
			var d struct {
				State string `json:"state"`
			}
			if json.Unmarshal(out, &d) == nil && d.State != "" && d.State != "RUNNING" && d.State != "CANCELLING" {
				return d.State
			}
		} else if !strings.Contains(err.Error(), "cannot reach") {
			t.Logf("deployments show: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("deployment %s did not finish", id)
	return ""
}
