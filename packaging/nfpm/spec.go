package main

import (
	"os"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/files"
)

// pkg is one Deckhand package.
type pkg struct {
	name        string
	summary     string
	description string
	binaries    []string // from --bin, to /usr/bin
	unit        string   // packaging/<unit>
	configSrc   string   // packaging/<configSrc>
	configDst   string
	postinstall string // packaging/scripts/...
	preremove   string
}

func packages() []pkg {
	return []pkg{
		{
			name:    "deckhand-agent",
			summary: "Deckhand agent: deploys AEM code on this host",
			description: "The Deckhand agent runs on every AEM author, publish and dispatcher host.\n" +
				"It keeps one mutual-TLS stream to the Deckhand control plane and does its\n" +
				"deployment tasks on this host: dispatcher config backup, deploy, configtest,\n" +
				"reload and restore, AEM package installs, load-balancer detach/attach and\n" +
				"cache flushes. It is not started until it is enrolled.",
			binaries:    []string{"deckhand-agent"},
			unit:        "deckhand-agent.service",
			configSrc:   "deckhand-agent.yaml",
			configDst:   "/etc/deckhand/agent.yaml",
			postinstall: "agent-postinstall.sh",
			preremove:   "agent-preremove.sh",
		},
		{
			name:    "deckhand-server",
			summary: "Deckhand control plane and deckctl admin CLI",
			description: "The Deckhand control plane plans and drives AEM pipeline executions and\n" +
				"rollouts across the agents, and deckctl, its admin CLI.",
			binaries:    []string{"deckhand-server", "deckctl"},
			unit:        "deckhand-server.service",
			configSrc:   "deckhand-server.yaml",
			configDst:   "/etc/deckhand/server.yaml",
			postinstall: "server-postinstall.sh",
			preremove:   "server-preremove.sh",
		},
	}
}

// unitDir is where each format's systemd units go: Debian's
// /lib/systemd/system, and RHEL's %{_unitdir}, /usr/lib/systemd/system (on
// RHEL /lib is a symlink to /usr/lib, and rpm should own real paths).
var unitDir = map[string]string{
	"deb": "/lib/systemd/system",
	"rpm": "/usr/lib/systemd/system",
}

// depends names what the scripts run that a minimal system might lack:
// useradd/groupadd (passwd on Debian, shadow-utils on RHEL). systemd is
// not required: the packages also install into containers and chroots,
// where the scripts skip systemctl.
var depends = map[string][]string{
	"deb": {"passwd"},
	"rpm": {"shadow-utils"},
}

// info is the nfpm description of p for one format.
func (b builder) info(p pkg, format string) *nfpm.Info {
	pk := func(parts ...string) string { return filepath.Join(append([]string{b.root, "packaging"}, parts...)...) }
	doc := "/usr/share/doc/" + p.name + "/"

	var contents files.Contents
	for _, bn := range p.binaries {
		contents = append(contents, &files.Content{
			Source: filepath.Join(b.bin, bn), Destination: "/usr/bin/" + bn,
			FileInfo: fileInfo(0o755),
		})
	}
	contents = append(contents,
		&files.Content{
			Source: pk(p.unit), Destination: unitDir[format] + "/" + p.unit,
			FileInfo: fileInfo(0o644),
		},
		// /etc/deckhand is shared by both packages (same attributes, which
		// dpkg and rpm both accept).
		&files.Content{Destination: "/etc/deckhand", Type: files.TypeDir, FileInfo: fileInfo(0o755)},
		// The example config, kept across upgrades once edited
		// (config|noreplace: a deb conffile, an rpm %config(noreplace)). 0640:
		// the agent's will hold its join token and AEM credentials; the
		// server's is made group deckhand by the postinstall so the
		// server's user can read it.
		&files.Content{
			Source: pk(p.configSrc), Destination: p.configDst,
			Type: files.TypeConfigNoReplace, FileInfo: fileInfo(0o640),
		},
		&files.Content{Source: filepath.Join(b.root, "README.md"), Destination: doc + "README.md", FileInfo: fileInfo(0o644)},
		&files.Content{Source: pk("README.md"), Destination: doc + "INSTALL.md", FileInfo: fileInfo(0o644)},
		&files.Content{Source: filepath.Join(b.root, "docs", "security.md"), Destination: doc + "security.md", FileInfo: fileInfo(0o644)},
	)

	return &nfpm.Info{
		Name:        p.name,
		Arch:        b.arch,
		Platform:    "linux",
		Version:     b.version,
		Section:     "admin",
		Priority:    "optional",
		Maintainer:  b.maintainer,
		Vendor:      "Deckhand",
		Homepage:    "https://github.com/deckhand-dev/deckhand",
		Description: p.summary + "\n" + p.description,
		Overridables: nfpm.Overridables{
			Depends:  depends[format],
			Contents: contents,
			Scripts: nfpm.Scripts{
				PostInstall: pk("scripts", p.postinstall),
				PreRemove:   pk("scripts", p.preremove),
				PostRemove:  pk("scripts", "postremove.sh"),
			},
			RPM: nfpm.RPM{Summary: p.summary, Group: "System Environment/Daemons"},
		},
	}
}

// fileInfo: everything the packages install belongs to root; the scripts
// hand the server's config and state to the deckhand user.
func fileInfo(m os.FileMode) *files.ContentFileInfo {
	return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: m}
}
