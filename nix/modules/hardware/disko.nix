# Disk layout for stock installs by nixos-anywhere: GPT with a BIOS boot
# partition and an ESP, so the same layout boots on BIOS and UEFI machines.
# Existing machines name their disk in the config (installDisk).
{ config, lib, ... }:
let
  inherit (config.runnerFleet) host;
in
{
  disko.devices.disk.main = {
    type = "disk";
    # Hetzner Cloud exposes the root disk as /dev/sda, DigitalOcean as /dev/vda;
    # hardware/default.nix refuses an existing machine without installDisk.
    device =
      if host.provider == "existing" then
        host.installDisk
      else
        lib.mkDefault (if host.provider == "digitalocean" then "/dev/vda" else "/dev/sda");
    content = {
      type = "gpt";
      partitions = {
        bios = {
          size = "1M";
          type = "EF02";
        };
        esp = {
          size = "512M";
          type = "EF00";
          content = {
            type = "filesystem";
            format = "vfat";
            mountpoint = "/boot";
          };
        };
        root = {
          size = "100%";
          content = {
            type = "filesystem";
            format = "ext4";
            mountpoint = "/";
          };
        };
      };
    };
  };

  # disko fills in grub's devices from the EF02 partition.
  boot.loader.grub = {
    enable = true;
    efiSupport = true;
    efiInstallAsRemovable = true;
  };
}
