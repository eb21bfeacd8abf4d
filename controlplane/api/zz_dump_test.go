package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/pipeline"
)

func pretty(b []byte) string {
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		return string(b)
	}
	return out.String()
}

func TestZZDump(t *testing.T) {
	if os.Getenv("DUMP") == "" {
		t.Skip()
	}
	f := setup(t, true)
	w := &bytes.Buffer{}
	show := func(title string, a answer) {
		fmt.Fprintf(w, "### %s -> %d %s\n%s\n\n", title, a.code, a.header.Get("Content-Type"), pretty(a.body))
	}
	show("programs", f.call("GET", "/api/programs", viewer, ""))
	show("pipelines", f.call("GET", "/api/program/wknd/pipelines", viewer, ""))
	events, _, _, _ := stream(t, f.client, f.base+pl+"/events", "tok-"+viewer)
	f.gates.set(pipeline.ActionCodeQuality, lowCoverage)
	a := f.call("PUT", pl+"/execution", deployer, "")
	show("start "+a.header.Get("Location"), a)
	show("busy", f.call("PUT", pl+"/execution", deployer, ""))
	show("emerg", f.call("PUT", pl+"/execution?pipelineExecutionMode=EMERGENCY", deployer, ""))
	loc := a.header.Get("Location")
	_, cq := f.waitStep(loc, by("codeQuality"), "WAITING")
	show("step", f.call("GET", cq.Links["self"].Href, viewer, ""))
	show("metrics", f.call("GET", cq.Links["metrics"].Href, viewer, ""))
	show("current", f.call("GET", pl+"/execution", viewer, ""))
	show("advance viewer", f.call("PUT", cq.Links["advance"].Href, viewer, `{"metrics":[{"kpi":"coverage","override":true}]}`))
	show("advance", f.call("PUT", cq.Links["advance"].Href, deployer, `{"metrics":[{"kpi":"coverage","override":true}]}`))
	_, ap := f.waitStep(loc, by("approval"), "WAITING")
	show("approve", f.call("PUT", ap.Links["advance"].Href, approver, `{"approved":true}`))
	_, sch := f.waitStep(loc, by("schedule"), "WAITING")
	show("schedule", f.call("PUT", sch.Links["advance"].Href, approver, `{"type":"SCHEDULED","schedule":"2026-12-01T21:00:00.000Z"}`))
	show("cancel", f.call("PUT", sch.Links["cancel"].Href, deployer, ""))
	f.waitStatus(loc, "CANCELLED")
	show("logs", f.call("GET", loc+"/phase/1/step/2/logs", viewer, ""))
	show("list", f.call("GET", pl+"/executions?limit=1", viewer, ""))
	show("emergency", f.call("PUT", "/api/program/wknd/emergency", cse, `{"enabled":true}`))
	show("401", f.call("GET", "/api/programs", nobody, ""))
	time.Sleep(200 * time.Millisecond)
	for len(events) > 0 {
		ev := <-events
		b, _ := json.Marshal(ev.data)
		fmt.Fprintf(w, "EV %s\n", b)
	}
	os.WriteFile("/tmp/apidump.txt", w.Bytes(), 0o644)
}
