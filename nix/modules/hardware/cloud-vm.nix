# Hetzner Cloud and DigitalOcean: KVM guests with virtio devices.
#
# A function of the inventory record, applied in hardware/default.nix before
# the module system runs: `imports` may not depend on `config` (reading
# config.runnerFleet.host here recursed infinitely).
host:
{ modulesPath, lib, ... }:
let
  fromImage = host.image != "stock";
  # Hetzner Cloud exposes the root disk as /dev/sda (virtio-scsi),
  # DigitalOcean as /dev/vda (virtio-blk).
  rootDisk = if host.provider == "hetzner" then "/dev/sda" else "/dev/vda";
in
{
  imports = [
    "${modulesPath}/profiles/qemu-guest.nix"
    # Hosts started from our raw/qcow2 image keep that image's layout; stock
    # installs get theirs from disko (hardware/default.nix adds it).
  ] ++ lib.optional fromImage "${modulesPath}/virtualisation/disk-image.nix";

  config = lib.mkMerge [
    { services.qemuGuest.enable = true; }
    (lib.mkIf fromImage {
      # The images we upload (flake packages <role>-raw / <role>-qcow2) are the
      # BIOS variants; disk-image.nix defaults to EFI, which would switch the
      # running host to systemd-boot and a /boot it does not have.
      image.efiSupport = false;
      # disk-image.nix installs grub on /dev/vda by default (mkDefault).
      boot.loader.grub.devices = [ rootDisk ];
    })
  ];
}
