#!/bin/sh
# deckhand-server package, after its files are in place: deb postinst
# ("configure" [previous-version]) and rpm %post (number of installed
# versions: 1 on install, 2 on upgrade). POSIX sh for Debian's dash and
# RHEL's bash; safe to run again.
set -e

unit=deckhand-server.service
user=deckhand
datadir=/var/lib/deckhand-server
config=/etc/deckhand/server.yaml

upgrade=false
case "${1:-}" in
configure) [ -z "${2:-}" ] || upgrade=true ;;
abort-*) exit 0 ;; # deb rolled a failed upgrade/removal back: nothing to redo
[0-9]*) [ "$1" -lt 2 ] || upgrade=true ;;
esac

# The server runs as this system user (User= in the unit). Never a login.
if ! getent group "$user" >/dev/null; then
	groupadd --system "$user"
fi
if ! getent passwd "$user" >/dev/null; then
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	useradd --system --gid "$user" --home-dir /nonexistent --no-create-home \
		--shell "$nologin" --comment "Deckhand" "$user"
fi

# The state dir holds the CA key: the server's alone. systemd's
# StateDirectory= would create it too; doing it here means it exists, with
# the right owner, also before the first start and without systemd.
install -d -m 0700 -o "$user" -g "$user" "$datadir"

# The config is shipped root:root 0640; the server (user deckhand) must read
# it. Only the shipped state is changed: an operator's choice is kept.
if [ -f "$config" ] && [ "$(stat -c %G "$config")" = root ]; then
	chgrp "$user" "$config"
fi

command -v systemctl >/dev/null 2>&1 || exit 0
running=false
[ -d /run/systemd/system ] && running=true # systemd is PID 1 (not a chroot/container build)
if $running; then
	systemctl daemon-reload || echo "deckhand-server: systemctl daemon-reload failed" >&2
fi
if $upgrade; then
	# Same enablement as before the upgrade; restart only if it was running,
	# so the new binary takes over.
	if $running; then
		systemctl try-restart "$unit" || echo "deckhand-server: restart failed; see: journalctl -u $unit" >&2
	fi
	exit 0
fi
# enable works without a running systemd too. A failure here must not fail
# the installation: the files are in place, the operator can enable it.
systemctl enable "$unit" || echo "deckhand-server: could not enable $unit" >&2
if $running; then
	if systemctl start "$unit"; then
		echo "deckhand-server started. The first admin's credentials are in $datadir/admin-credentials.yaml"
	else
		echo "deckhand-server did not start; fix $config, then: systemctl restart deckhand-server (journalctl -u $unit says why)" >&2
	fi
fi
