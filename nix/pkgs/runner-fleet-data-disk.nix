# Formats a data disk once (never one with anything on it) and mounts it; see the script.
# Tested with real mkfs and mount on loop devices in test/data-disks.test.ts.
{ writeShellApplication, util-linux, e2fsprogs, coreutils }:
writeShellApplication {
  name = "runner-fleet-data-disk";
  runtimeInputs = [ util-linux e2fsprogs coreutils ];
  text = builtins.readFile ./runner-fleet-data-disk.sh;
}
