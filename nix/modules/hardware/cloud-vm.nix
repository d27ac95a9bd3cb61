# Hetzner Cloud and DigitalOcean: KVM guests with virtio devices.
{ modulesPath, lib, config, ... }:
let
  inherit (config.runnerFleet) host;
in
{
  imports = [
    "${modulesPath}/profiles/qemu-guest.nix"
    # Hosts started from our qcow2/raw image keep that image's layout; stock
    # installs get theirs from disko (hardware/default.nix adds it).
  ] ++ lib.optional (host.image != "stock") "${modulesPath}/virtualisation/disk-image.nix";

  services.qemuGuest.enable = true;
}
