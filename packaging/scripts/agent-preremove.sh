#!/bin/sh
# deckhand-agent package, before its files are removed: deb prerm ("remove",
# "upgrade" new-version, ...) and rpm %preun (number of versions left: 0 on
# removal, 1 on upgrade). Stops and disables the service on removal only; on
# upgrade the new package's postinstall restarts it. POSIX sh; safe to run
# again.
set -e

unit=deckhand-agent.service

remove=false
case "${1:-}" in
remove | deconfigure) remove=true ;;
0) remove=true ;;
esac
$remove || exit 0
command -v systemctl >/dev/null 2>&1 || exit 0

# disable works without a running systemd; stop needs one. The agent may
# take up to its TimeoutStopSec to checkpoint a running task.
systemctl disable "$unit" >/dev/null 2>&1 || true
if [ -d /run/systemd/system ]; then
	systemctl stop "$unit" || echo "$unit did not stop cleanly; see: journalctl -u $unit" >&2
fi
