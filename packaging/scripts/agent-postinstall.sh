#!/bin/sh
# deckhand-agent package, after its files are in place: deb postinst
# ("configure" [previous-version]) and rpm %post (number of installed
# versions: 1 on install, 2 on upgrade). POSIX sh for Debian's dash and
# RHEL's bash; safe to run again.
#
# It never starts an agent that is not enrolled: without its certificate the
# agent can only fail (no join token yet) or, worse, enroll with a token
# left in the config for another purpose. Enrollment is an operator's act.
set -e

unit=deckhand-agent.service
user=deckhand
datadir=/var/lib/deckhand-agent
config=/etc/deckhand/agent.yaml
cert=$datadir/tls/agent.crt

upgrade=false
case "${1:-}" in
configure) [ -z "${2:-}" ] || upgrade=true ;;
abort-*) exit 0 ;; # deb rolled a failed upgrade/removal back: nothing to redo
[0-9]*) [ "$1" -lt 2 ] || upgrade=true ;;
esac

# The agent runs as root by default (see the unit file); the deckhand user
# is created so that the documented non-root setup is one drop-in away, and
# so that agent and server packages agree on it.
if ! getent group "$user" >/dev/null; then
	groupadd --system "$user"
fi
if ! getent passwd "$user" >/dev/null; then
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	useradd --system --gid "$user" --home-dir /nonexistent --no-create-home \
		--shell "$nologin" --comment "Deckhand" "$user"
fi

# Journal, key and certificate, backups: the agent's alone. Created only if
# missing, so a non-root setup's ownership is kept.
if [ ! -d "$datadir" ]; then
	install -d -m 0700 "$datadir"
fi

enrolled=false
[ -f "$cert" ] && enrolled=true

if command -v systemctl >/dev/null 2>&1; then
	running=false
	[ -d /run/systemd/system ] && running=true # systemd is PID 1
	if $running; then
		systemctl daemon-reload || echo "deckhand-agent: systemctl daemon-reload failed" >&2
	fi
	if $upgrade; then
		# Same enablement as before; a running agent restarts on the new
		# binary (it checkpoints its task on SIGTERM and resumes it).
		if $running; then
			systemctl try-restart "$unit" || echo "deckhand-agent: restart failed; see: journalctl -u $unit" >&2
		fi
		exit 0
	fi
	if $enrolled; then
		# Reinstalled on an enrolled host: it may run as before.
		systemctl enable "$unit" || echo "deckhand-agent: could not enable $unit" >&2
		if $running; then
			systemctl start "$unit" || echo "deckhand-agent did not start; see: journalctl -u $unit" >&2
		fi
		exit 0
	fi
fi

if ! $enrolled; then
	cat <<MSG
deckhand-agent is installed but NOT enrolled, so it was not started.
To enroll this host:
  1. On a machine with deckctl:   deckctl tokens create --host <this host's id>
  2. In $config set host_id and server, and the join_token and
     ca_fingerprint that command printed.
  3. systemctl enable --now deckhand-agent
MSG
fi
