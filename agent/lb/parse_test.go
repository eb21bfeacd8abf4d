package lb

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// statHeader26 is the "show stat" header of HAProxy 2.6.12 (Debian 12),
// copied from a live instance.
const statHeader26 = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,\n"

// Rows copied from the same instance: d1 just set ready ("UP 1/2") with one
// session, d2 down with a failed layer-4 check.
const statRows26 = "be,d1,0,0,1,1,,0,0,0,,0,,0,0,0,0,UP 1/2,1,1,0,1,2,0,1,,1,3,1,,0,,2,0,,0,L7OK,200,1,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Layer7 check passed,,2,2,2,,,,127.0.0.1:18081,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n" +
	"be,d2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,1,1,,1,3,2,,0,,2,0,,0,L4CON,,2,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,2,0,,,,127.0.0.1:18082,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n\n"

func TestParseShowStat26(t *testing.T) {
	tab, err := parseShowStat(statHeader26 + statRows26)
	require.NoError(t, err)

	d1, err := tab.server("be", "d1")
	require.NoError(t, err)
	require.Equal(t, serverStat{Status: "UP 1/2", Scur: 1, CheckStatus: "L7OK", CheckDesc: "Layer7 check passed"}, d1)

	d2, err := tab.server("be", "d2")
	require.NoError(t, err)
	require.Equal(t, "DOWN", d2.Status)
	require.Equal(t, "Layer4 connection problem", d2.CheckDesc)

	// A check in progress shows as "* L7STS"; the prefix is dropped.
	tab, err = parseShowStat("# pxname,svname,status,scur,check_status\nbe,d1,DOWN,0,* L7STS\n")
	require.NoError(t, err)
	d1, err = tab.server("be", "d1")
	require.NoError(t, err)
	require.Equal(t, "L7STS", d1.CheckStatus)

	_, err = tab.server("be", "d3")
	require.ErrorContains(t, err, "no server be/d3 in show stat")
	_, err = tab.server("other", "d1")
	require.Error(t, err)
}

func TestParseShowStatFindsColumnsByName(t *testing.T) {
	// Reordered and reduced columns, and a quoted field with a comma: a
	// parser that splits on commas or counts positions would misread it.
	out := "# svname,pxname,check_desc,status,scur,qcur\n" +
		"d1,be,\"odd, but quoted\",DRAIN,3,2\n\n"
	tab, err := parseShowStat(out)
	require.NoError(t, err)
	st, err := tab.server("be", "d1")
	require.NoError(t, err)
	require.Equal(t, serverStat{Status: "DRAIN", Scur: 3, Qcur: 2, CheckDesc: "odd, but quoted"}, st)
}

func TestParseShowStatErrors(t *testing.T) {
	_, err := parseShowStat("No such proxy.\n\n")
	require.ErrorContains(t, err, `HAProxy answered "No such proxy."`)

	_, err = parseShowStat("# pxname,svname,status\nbe,d1,UP\n")
	require.ErrorContains(t, err, `no "scur" column`)

	tab, err := parseShowStat("# pxname,svname,status,scur\nbe,d1,UP,x\n")
	require.NoError(t, err)
	_, err = tab.server("be", "d1")
	require.ErrorContains(t, err, `scur "x" is not a number`)
}

const serversState26 = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n" +
	"3 be 1 d1 127.0.0.1 0 1 1 1 0 15 3 0 14 0 0 0 - 18081 - 0 0 - - 0\n" +
	"3 be 2 d2 127.0.0.1 2 8 1 1 1 8 2 0 6 0 0 0 - 18082 - 0 0 - - 0\n\n"

func TestParseServersState26(t *testing.T) {
	d1, err := parseServersState(serversState26, "be", "d1")
	require.NoError(t, err)
	require.Equal(t, serverState{OpState: 0, AdminState: admForcedMaint}, d1)
	d2, err := parseServersState(serversState26, "be", "d2")
	require.NoError(t, err)
	require.Equal(t, serverState{OpState: 2, AdminState: admForcedDrain}, d2)

	_, err = parseServersState(serversState26, "be", "d3")
	require.ErrorContains(t, err, "no server be/d3")
	_, err = parseServersState("Can't find backend.\n\n", "nobe", "d1")
	require.ErrorContains(t, err, `HAProxy answered "Can't find backend."`)
	_, err = parseServersState("1\n# be_name srv_name\nbe d1\n", "be", "d1")
	require.ErrorContains(t, err, `no "srv_op_state" column`)
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		status string
		adm    int
		want   State
	}{
		{"UP", 0, StateInService},
		{"no check", 0, StateInService},
		{"UP 1/2", 0, StateChecking},
		{"DOWN 1/2", 0, StateChecking},
		{"DOWN", 0, StateDown},
		{"DOWN (agent)", 0, StateDown},
		{"DRAIN", admForcedDrain, StateDraining},
		{"DRAIN 1/2", admForcedDrain, StateDraining},
		{"DOWN", admForcedDrain, StateDraining}, // admin flag wins over the check result
		{"NOLB", 0, StateDraining},
		{"MAINT", admForcedMaint, StateDetached},
		{"MAINT (via be/d0)", admInheritedMaint, StateDetached},
		{"MAINT (resolution)", admResolvMaint, StateDetached},
		{"MAINT", 0, StateDetached},
		{"???", 0, StateUnknown},
	} {
		require.Equal(t, tc.want, classify(serverStat{Status: tc.status}, tc.adm), "%q adm=%#x", tc.status, tc.adm)
	}
}

func TestAPIErrorHintsAtLevelAdmin(t *testing.T) {
	err := &apiError{cmd: "set server be/d1 state drain", answer: "Permission denied"}
	require.Contains(t, err.Error(), `"level admin"`)
}

// FuzzParseShowStat checks the parser never panics and that whatever it
// accepts can be queried.
func FuzzParseShowStat(f *testing.F) {
	f.Add(statHeader26 + statRows26)
	f.Add("# pxname,svname,status,scur\nbe,d1,UP,0\n")
	f.Add("No such proxy.\n")
	f.Add("# \n\"unterminated\n")
	f.Fuzz(func(t *testing.T, out string) {
		tab, err := parseShowStat(out)
		if err != nil {
			return
		}
		_, _ = tab.server("be", "d1")
		for _, rec := range tab.rows {
			_ = tab.field(rec, "status")
		}
	})
}

// FuzzParseServersState checks the parser never panics.
func FuzzParseServersState(f *testing.F) {
	f.Add(serversState26)
	f.Add("Can't find backend.\n")
	f.Add("1\n# be_name srv_name srv_op_state srv_admin_state\nbe d1\n")
	f.Fuzz(func(t *testing.T, out string) {
		st, err := parseServersState(out, "be", "d1")
		if err == nil && strings.Count(out, "\n") < 2 {
			t.Fatalf("accepted %q without header: %+v", out, st)
		}
	})
}
