#!/bin/sh
# deckhand-agent and deckhand-server packages, after their files are
# removed: deb postrm and rpm %postun. Lets systemd forget the removed unit
# file. The state in /var/lib/deckhand-* (the CA, the agent's certificate
# and journal, backups) and the deckhand user are never deleted by the
# package, not even on purge: remove them by hand if the host is retired.
set -e

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
fi
