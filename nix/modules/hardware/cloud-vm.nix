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
  # The image this host was started from (flake packages <role>-raw /
  # <role>-qcow2): the BIOS variants (raw, qemu) on x86_64, the EFI ones
  # (raw-efi, qemu-efi) on aarch64, where grub has no non-EFI target.
  efi = host.arch == "aarch64";
in
{
  imports = [
    "${modulesPath}/profiles/qemu-guest.nix"
    # Hosts started from our raw/qcow2 image keep that image's layout; stock
    # installs get theirs from disko (hardware/default.nix adds it).
  ] ++ lib.optional fromImage "${modulesPath}/virtualisation/disk-image.nix";

  # Plain `if`, not mkIf: image.efiSupport is declared only by disk-image.nix,
  # which a stock host does not import, and mkIf false still needs the option.
  config = lib.mkMerge (
    [ { services.qemuGuest.enable = true; } ]
    ++ lib.optional fromImage (
      if efi then
        # disk-image.nix's default: systemd-boot on the image's ESP.
        { image.efiSupport = true; }
      else
        {
          # disk-image.nix defaults to EFI, which would switch the running
          # host to systemd-boot and a /boot it does not have.
          image.efiSupport = false;
          # disk-image.nix installs grub on /dev/vda by default (mkDefault).
          boot.loader.grub.devices = [ rootDisk ];
        }
    )
  );
}
