# containerd's devmapper thin pool on a disk (optionally dm-crypt with a key for this boot) or
# on sparse files; see the script. Tested in test/data-disks.test.ts (its plan always; for real
# where the kernel has device-mapper).
{ writeShellApplication, util-linux, lvm2, cryptsetup, coreutils }:
writeShellApplication {
  name = "runner-fleet-thinpool";
  runtimeInputs = [ util-linux lvm2 cryptsetup coreutils ];
  text = builtins.readFile ./runner-fleet-thinpool.sh;
}
