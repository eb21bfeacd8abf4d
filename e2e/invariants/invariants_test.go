package invariants

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var hosts = map[string]string{"author1": "author", "publish1": "publish", "dispatcher1": "dispatcher", "publish2": "publish", "dispatcher2": "dispatcher"}

type b struct{ evs []Event }

func (l *b) add(kind, step, task, host string, pair int, status string) *b {
	l.evs = append(l.evs, Event{Seq: uint64(len(l.evs) + 1), Kind: kind, Step: step, Task: task, Host: host, Pair: pair, Status: status})
	return l
}

func (l *b) step(step, task, host string, pair int, status string) *b {
	return l.add("step.started", step, task, host, pair, "").add("step.finished", step, task, host, pair, status)
}

func (l *b) pair(n int, pub, disp string) *b {
	p := "pair" + string(rune('0'+n))
	l.step(p+".detach", "lb_detach", disp, n, "succeeded")
	l.add("step.started", p+".install", "package_install", pub, n, "").add("step.started", p+".deploy", "dispatcher_deploy", disp, n, "")
	l.add("step.finished", p+".install", "package_install", pub, n, "succeeded").add("step.finished", p+".deploy", "dispatcher_deploy", disp, n, "succeeded")
	return l.step(p+".attach", "lb_attach", disp, n, "succeeded")
}

func (l *b) end(state, msg string) []Event {
	l.evs = append(l.evs, Event{Seq: uint64(len(l.evs) + 1), Kind: "deployment.finished", State: state, Message: msg})
	return l.evs
}

func prod() Options { return Options{Production: true, MaxUnavailable: 1, Hosts: hosts} }

func TestCleanProductionLog(t *testing.T) {
	evs := (&b{}).step("author", "package_install", "author1", 0, "succeeded").pair(1, "publish1", "dispatcher1").pair(2, "publish2", "dispatcher2").end("SUCCEEDED", "")
	require.NoError(t, Check(evs, prod()))
}

func TestTwoPairsOutAtOnce(t *testing.T) {
	l := (&b{}).step("author", "package_install", "author1", 0, "succeeded")
	l.step("pair1.detach", "lb_detach", "dispatcher1", 1, "succeeded")
	l.step("pair2.detach", "lb_detach", "dispatcher2", 2, "succeeded")
	err := Check(l.end("FAILED", "dispatcher1 and dispatcher2 stay detached"), prod())
	require.ErrorContains(t, err, "2 pairs out of the load balancer at once")
	require.NoError(t, Check(l.evs, Options{Production: true, MaxUnavailable: 2, Hosts: hosts}), "allowed with max_unavailable 2, and the final message names the hosts")
}

func TestPublishBeforeAuthor(t *testing.T) {
	l := (&b{}).add("step.started", "author", "package_install", "author1", 0, "")
	l.step("pair1.detach", "lb_detach", "dispatcher1", 1, "succeeded")
	l.step("pair1.install", "package_install", "publish1", 1, "succeeded")
	l.add("step.finished", "author", "package_install", "author1", 0, "succeeded")
	l.step("pair1.attach", "lb_attach", "dispatcher1", 1, "succeeded")
	require.ErrorContains(t, Check(l.end("SUCCEEDED", ""), prod()), "publish1 started installing before the author finished")
}

func TestChangeWhileInService(t *testing.T) {
	l := (&b{}).step("pair1.deploy", "dispatcher_deploy", "dispatcher1", 1, "succeeded")
	require.ErrorContains(t, Check(l.end("SUCCEEDED", ""), prod()), "changed dispatcher1 while pair 1 was in the load balancer")
}

func TestLeftDetached(t *testing.T) {
	l := (&b{}).step("pair1.detach", "lb_detach", "dispatcher1", 1, "succeeded")
	require.ErrorContains(t, Check((&b{evs: append([]Event(nil), l.evs...)}).end("SUCCEEDED", ""), prod()), "still detached at the end of a successful deployment")
	require.ErrorContains(t, Check((&b{evs: append([]Event(nil), l.evs...)}).end("FAILED", "something"), prod()), "left detached but the log never says so")
	said := (&b{evs: append([]Event(nil), l.evs...)})
	said.evs = append(said.evs, Event{Seq: 3, Kind: "note", Message: "pair 1 stays out of the load balancer: publish1 failed (dispatcher1)"})
	require.NoError(t, Check(said.end("FAILED", "x"), prod()))
}

func TestStepRanTwice(t *testing.T) {
	l := (&b{}).step("pair1.detach", "lb_detach", "dispatcher1", 1, "succeeded").step("pair1.detach", "lb_detach", "dispatcher1", 1, "succeeded")
	l.step("pair1.attach", "lb_attach", "dispatcher1", 1, "succeeded")
	err := Check(l.end("SUCCEEDED", ""), prod())
	require.ErrorContains(t, err, "step pair1.detach started 2 times")
	l2 := (&b{}).step("x", "lb_detach", "dispatcher1", 1, "succeeded")
	l2.evs[1].Attempts = 2
	require.ErrorContains(t, Check(l2.end("FAILED", "dispatcher1"), prod()), "the agent started its work 2 times")
}

func TestParse(t *testing.T) {
	evs, err := Parse(strings.NewReader(`{"seq":1,"kind":"step.started","step":"a","task":"lb_detach","host":"d1","pair":1}
{"seq":2,"kind":"deployment.finished","state":"FAILED","message":"d1 left"}
`))
	require.NoError(t, err)
	require.Len(t, evs, 2)
	require.Equal(t, "lb_detach", evs[0].Task)
	_, err = Parse(strings.NewReader("{bad"))
	require.Error(t, err)
}
