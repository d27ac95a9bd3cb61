# Hardware of the example inventory's `existing` host. For a real machine,
# start from its `nixos-generate-config --show-hardware-config`.
{ lib, ... }:
{
  boot.initrd.availableKernelModules = [ "ahci" "nvme" "sd_mod" "xhci_pci" ];
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  fileSystems."/boot" = {
    device = "/dev/disk/by-label/boot";
    fsType = "vfat";
  };
  hardware.enableRedistributableFirmware = lib.mkDefault true;
}
