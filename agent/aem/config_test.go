package aem_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/agent/aem"
	"github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/simtest"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
)

// agentFile is the part of the agent's config file this package owns.
type agentFile struct {
	AEM *aem.Config `yaml:"aem"`
}

func decode(t *testing.T, text string) (*aem.Config, error) {
	t.Helper()
	var f agentFile
	if err := yamlconf.Decode("agent.yaml", []byte(text), &f); err != nil {
		return nil, err
	}
	require.NotNil(t, f.AEM)
	return f.AEM, f.AEM.Validate("agent.yaml")
}

func TestConfigValid(t *testing.T) {
	c, err := decode(t, `
aem:
  base_url: http://127.0.0.1:4502
  user: deployer
  password_file: /etc/deckhand/aem-password
  request_timeout: 1m
  install_timeout: 20m
  reconcile_timeout: 1h
  poll_interval: 5s
  retries:
    count: 0
    base_backoff: 1s
    max_backoff: 1m
  dependency_handling: STRICT
`)
	require.NoError(t, err)
	require.Equal(t, "deployer", c.User)
	require.Equal(t, 20*time.Minute, c.InstallTimeout.D())
	require.True(t, c.Retries.Pos.Has("count"), "count: 0 was written and means no retries")

	_, err = decode(t, "aem:\n  base_url: https://author.example.com/aem/\n  user: admin\n  password: admin\n")
	require.NoError(t, err, "https with a context path; everything else defaulted")
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"empty section", "aem: {}\n", []string{
			"agent.yaml:1: aem.base_url is required",
			"aem.user is required",
			"aem.password or password_file is required",
		}},
		{"both passwords", "aem:\n  base_url: http://h:4502\n  user: u\n  password: p\n  password_file: /p\n",
			[]string{"agent.yaml:5: aem.set password or password_file, not both"}},
		{"relative password file", "aem:\n  base_url: http://h:4502\n  user: u\n  password_file: secret.txt\n",
			[]string{`agent.yaml:4: aem.password_file must be an absolute path, got "secret.txt"`}},
		{"scheme", "aem:\n  base_url: 127.0.0.1:4502\n  user: u\n  password: p\n",
			[]string{`agent.yaml:2: aem.base_url "127.0.0.1:4502"`}},
		{"ftp", "aem:\n  base_url: ftp://h\n  user: u\n  password: p\n",
			[]string{"must start with http:// or https://"}},
		{"credentials in url", "aem:\n  base_url: http://admin:admin@h:4502\n  user: u\n  password: p\n",
			[]string{"must not contain credentials"}},
		{"query", "aem:\n  base_url: http://h:4502/?x=1\n  user: u\n  password: p\n",
			[]string{"must not have a query or fragment"}},
		{"retries", "aem:\n  base_url: http://h\n  user: u\n  password: p\n  retries:\n    count: -1\n    base_backoff: 1m\n    max_backoff: 1s\n", []string{
			"agent.yaml:6: aem.retries.count must be between 0 and 100, got -1",
			"agent.yaml:7: aem.retries.base_backoff (1m0s) must not exceed retries.max_backoff (1s)",
		}},
		{"poll longer than reconcile", "aem:\n  base_url: http://h\n  user: u\n  password: p\n  poll_interval: 1m\n  reconcile_timeout: 10s\n",
			[]string{"agent.yaml:5: aem.poll_interval (1m0s) must not exceed reconcile_timeout (10s)"}},
		{"dependency handling", "aem:\n  base_url: http://h\n  user: u\n  password: p\n  dependency_handling: loose\n",
			[]string{`agent.yaml:5: aem.dependency_handling "loose" is not one of ignore, best_effort, required, strict`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decode(t, tc.yaml)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

func TestConfigDecodeErrors(t *testing.T) {
	_, err := decode(t, "aem:\n  base_url: http://h\n  user: u\n  pasword: p\n")
	require.ErrorContains(t, err, `agent.yaml:4: unknown key "pasword" (did you mean "password"?)`)
	_, err = decode(t, "aem:\n  base_url: http://h\n  install_timeout: 10\n")
	require.ErrorContains(t, err, "agent.yaml:3")
	require.ErrorContains(t, err, "is not a duration")
}

func TestConfigInGoNegativeDurations(t *testing.T) {
	c := aem.Config{BaseURL: "http://h", User: "u", Password: "p", InstallTimeout: yamlconf.Duration(-time.Second),
		Retries: aem.Retries{MaxBackoff: yamlconf.Duration(-time.Second)}}
	err := c.Validate("x")
	require.ErrorContains(t, err, "aem.install_timeout must not be negative (got -1s)")
	require.ErrorContains(t, err, "aem.retries.max_backoff must not be negative")
	_, err = aem.NewClient(&c, nil)
	require.Error(t, err, "NewClient validates too")
}

// TestConfigPasswordFileAndNoRetries: the password comes from the file
// (trailing newline ignored), and a written "count: 0" means one try only.
func TestConfigPasswordFileAndNoRetries(t *testing.T) {
	s := simtest.New(t, func(c *sim.Config) { c.Password = "s3cret" })
	pw := writeFile(t, "aem-password", "s3cret\n")
	c, err := decode(t, "aem:\n  base_url: "+s.URL+"\n  user: admin\n  password_file: "+pw+"\n  retries:\n    count: 0\n")
	require.NoError(t, err)
	cl, err := aem.NewClient(c, testLogger(t, "aem-client"))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	_, err = cl.List(context.Background())
	require.NoError(t, err)

	_, err = s.AddFault(sim.Fault{Kind: sim.FaultHTTP500, Cmd: "ls", Count: 1})
	require.NoError(t, err)
	s.ResetRequests()
	_, err = cl.List(context.Background())
	require.ErrorContains(t, err, "HTTP 500")
	require.Len(t, s.Requests(), 1, "count: 0 means no retries")

	c.PasswordFile = writeFile(t, "empty", "\n")
	_, err = aem.NewClient(c, nil)
	require.ErrorContains(t, err, "is empty")
	c.PasswordFile = "/nonexistent/aem-password"
	_, err = aem.NewClient(c, nil)
	require.ErrorContains(t, err, "aem.password_file")
}

func TestConfigStringHidesPassword(t *testing.T) {
	c := aem.Config{BaseURL: "http://h:4502", User: "admin", Password: "hunter2"}
	require.NotContains(t, c.String(), "hunter2")
}

// TestAgentConfigAEMSection: the agent's config file carries the section
// and reports its problems with the file's name and line.
func TestAgentConfigAEMSection(t *testing.T) {
	base := "host_id: author1\nserver: cp:7443\ndata_dir: /var/lib/deckhand\n"
	c, err := config.Parse("agent.yaml", []byte(base))
	require.NoError(t, err)
	require.Nil(t, c.AEM, "no section: package_install is not registered")

	c, err = config.Parse("agent.yaml", []byte(base+"aem:\n  base_url: http://127.0.0.1:4502\n  user: admin\n  password: admin\n"))
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:4502", c.AEM.BaseURL)

	_, err = config.Parse("agent.yaml", []byte(base+"aem:\n  base_url: http://127.0.0.1:4502\n  password: admin\n"))
	require.ErrorContains(t, err, "agent.yaml:5: aem.user is required")
}
