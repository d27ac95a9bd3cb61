#!/usr/bin/env bash
# fireactions-supervise PROGRAM ARGS...: runs the fireactions server and turns any exit it
# was not asked for into a failure, so systemd's Restart=on-failure works.
#
# fireactions v0.4.0 prints "Error executing command: ..." and exits 0 on every error
# (cmd/fireactions/main.go never calls os.Exit(1)), so systemd would record a clean stop.
# The server otherwise runs until SIGTERM or SIGINT (commands/server.go): an exit before we
# forwarded one is a failure, whatever its status. The unit uses KillMode=mixed so that
# systemd's SIGTERM reaches this script, which passes it on.
set -u

stopping=0
child=
forward() {
  stopping=1
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi
}
trap forward TERM INT

"$@" &
child=$!

status=0
while :; do
  wait "$child"
  status=$?
  # A trapped signal interrupts wait while the child still runs: keep waiting for it.
  kill -0 "$child" 2>/dev/null || break
done

if [ "$stopping" = 1 ]; then
  exit "$status"
fi
echo "fireactions-supervise: $1 exited with status $status without being asked to stop; reporting failure (fireactions v0.4.0 exits 0 on errors)" >&2
exit 1
