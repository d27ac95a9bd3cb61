# ExecStartPre entries for a runner unit (fireactions, forgejo/gitea runners): record the unit
# file it starts from. A switch leaves these units running (restartIfChanged = false: a restart
# would kill jobs); runner-fleet-restart-changed (modules/bootstrap.nix) compares the record
# with the unit file the switch installed and restarts only stale units, after a drain.
{ pkgs, unit }:
let
  paths = import ./host-paths.nix;
in
[
  "+${pkgs.coreutils}/bin/mkdir -p ${paths.unitsDir}"
  "+${pkgs.runtimeShell} -c 'readlink -f /etc/systemd/system/${unit}.service > ${paths.unitsDir}/${unit}'"
]
