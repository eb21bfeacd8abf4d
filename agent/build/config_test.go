package build_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/build"
	agentconfig "github.com/deckhand-dev/deckhand/agent/config"
	"github.com/stretchr/testify/require"
)

const agentHead = "host_id: builder1\nserver: 127.0.0.1:7443\ndata_dir: /var/lib/deckhand-agent\n"

func parseBuilder(t *testing.T, section string) (*build.Config, error) {
	t.Helper()
	c, err := agentconfig.Parse("agent.yaml", []byte(agentHead+section))
	if err != nil {
		return nil, err
	}
	return c.Builder, nil
}

func TestConfigDefaults(t *testing.T) {
	b, err := parseBuilder(t, `builder:
  allowed_repositories: [https://git.example.com/site/]
  profiles:
    maven:
      command: [mvn, -B, clean, install]
      env: [JAVA_HOME, MAVEN_OPTS=-Xmx2g]
      network: true
      cache_dirs: [/var/cache/deckhand/m2]
  scans:
    quality:
      command: [/usr/local/bin/scan]
      metrics_file: target/metrics.json
`)
	require.NoError(t, err)
	require.Equal(t, filepath.Join("/var/lib/deckhand-agent", "workspaces"), b.WorkspaceDir)
	require.Equal(t, build.DefaultArtifacts, b.Artifacts)
	require.Equal(t, int64(build.DefaultMaxLogBytes), b.MaxLogBytes)
	require.Equal(t, build.DefaultKeepWorkspaces, b.KeepWorkspaces.D())
	require.Equal(t, build.DefaultGitTimeout, b.GitTimeout.D())
	require.Equal(t, "", b.Sandbox, "left to New: bwrap when installed")
	p := b.Profiles["maven"]
	require.Equal(t, []string{"mvn", "-B", "clean", "install"}, p.Command)
	require.Equal(t, build.DefaultBuildTimeout, p.Timeout.D())
	require.True(t, p.Network)
	require.Equal(t, build.DefaultScanTimeout, b.Scans["quality"].Timeout.D())
	require.Equal(t, "target/metrics.json", b.Scans["quality"].MetricsFile)

	b, err = parseBuilder(t, `builder:
  workspace_dir: /srv/ws
  allowed_repositories: [https://git.example.com/site/]
  sandbox: none
  artifacts: "*/target/*.zip"
  profiles:
    maven: {command: [mvn], timeout: 2h}
`)
	require.NoError(t, err)
	require.Equal(t, "/srv/ws", b.WorkspaceDir)
	require.Equal(t, build.SandboxNone, b.Sandbox)
	require.Equal(t, 2*time.Hour, b.Profiles["maven"].Timeout.D())
}

// TestConfigErrorsNameTheLine checks each mistake is reported at the line
// of the offending key.
func TestConfigErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct {
		name, section, want string
	}{
		{"no allowed repositories", "builder:\n  profiles:\n    m: {command: [mvn]}\n",
			"agent.yaml:5: builder.allowed_repositories is required"},
		{"ext transport", "builder:\n  allowed_repositories: [\"ext::sh -c evil\"]\n  profiles:\n    m: {command: [mvn]}\n",
			"agent.yaml:5: builder.allowed_repositories: \"ext::sh -c evil\""},
		{"option-like repository", "builder:\n  allowed_repositories: [--upload-pack=x]\n  profiles:\n    m: {command: [mvn]}\n",
			"must not start with '-'"},
		{"no profiles", "builder:\n  allowed_repositories: [https://g/]\n",
			"agent.yaml:5: builder.profiles: at least one build profile is required"},
		{"profile without command", "builder:\n  allowed_repositories: [https://g/]\n  profiles:\n    maven:\n      timeout: 1h\n",
			"agent.yaml:8: builder.profiles.maven.command is required"},
		{"bad env entry", "builder:\n  allowed_repositories: [https://g/]\n  profiles:\n    maven:\n      command: [mvn]\n      env: [\"1BAD\"]\n",
			"agent.yaml:9: builder.profiles.maven.env: \"1BAD\" is not NAME or NAME=VALUE"},
		{"relative cache dir", "builder:\n  allowed_repositories: [https://g/]\n  profiles:\n    maven:\n      command: [mvn]\n      cache_dirs: [m2]\n",
			"agent.yaml:9: builder.profiles.maven.cache_dirs: \"m2\" must be an absolute path"},
		{"unknown sandbox", "builder:\n  allowed_repositories: [https://g/]\n  sandbox: docker\n  profiles:\n    m: {command: [mvn]}\n",
			"agent.yaml:6: builder.sandbox \"docker\" is not one of bwrap, none"},
		{"relative workspace", "builder:\n  workspace_dir: ws\n  allowed_repositories: [https://g/]\n  profiles:\n    m: {command: [mvn]}\n",
			"agent.yaml:5: builder.workspace_dir must be an absolute path"},
		{"bad glob", "builder:\n  allowed_repositories: [https://g/]\n  artifacts: \"../*.zip\"\n  profiles:\n    m: {command: [mvn]}\n",
			"agent.yaml:6: builder.artifacts \"../*.zip\": must not contain .."},
		{"scan without metrics file", "builder:\n  allowed_repositories: [https://g/]\n  profiles:\n    m: {command: [mvn]}\n  scans:\n    q:\n      command: [scan]\n",
			"agent.yaml:10: builder.scans.q.metrics_file is required"},
		{"metrics file outside the checkout", "builder:\n  allowed_repositories: [https://g/]\n  profiles:\n    m: {command: [mvn]}\n  scans:\n    q:\n      command: [scan]\n      metrics_file: ../m.json\n",
			"agent.yaml:11: builder.scans.q.metrics_file \"../m.json\" must be a relative path inside the checkout"},
		{"negative max_log_bytes", "builder:\n  allowed_repositories: [https://g/]\n  max_log_bytes: -1\n  profiles:\n    m: {command: [mvn]}\n",
			"agent.yaml:6: builder.max_log_bytes must not be negative"},
		{"unknown key with a suggestion", "builder:\n  allowed_repositories: [https://g/]\n  profiles:\n    m: {comand: [mvn]}\n",
			"agent.yaml:7: unknown key \"comand\""},
		{"bad profile name", "builder:\n  allowed_repositories: [https://g/]\n  profiles:\n    \"my profile\": {command: [mvn]}\n",
			"builder.profiles.my profile: a profile name must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseBuilder(t, tc.section)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestConfigReportsEveryProblem(t *testing.T) {
	_, err := parseBuilder(t, "builder:\n  sandbox: x\n  profiles:\n    m: {timeout: 1m}\n")
	require.Error(t, err)
	for _, want := range []string{"allowed_repositories is required", "sandbox \"x\"", "profiles.m.command is required"} {
		require.Contains(t, err.Error(), want)
	}
	require.GreaterOrEqual(t, strings.Count(err.Error(), "agent.yaml:"), 3)
}
