# Image templates: the image variant (amazon, azure, raw, qemu) brings the
# real boot and disk setup. These defaults only let the plain configuration
# evaluate (e.g. under `nix flake check`), and lose to every variant.
{ lib, ... }:
{
  fileSystems."/" = lib.mkDefault {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  # Option-default priority (1500), below disk-image.nix's mkDefault (1000)
  # [ "/dev/vda" ]: a plain `boot.loader.grub.device` here would win over it
  # and leave the BIOS raw/qemu images without a bootloader.
  boot.loader.grub.devices = lib.mkOptionDefault [ "nodev" ];

  # amazon-init would apply user-data as a NixOS configuration; cloud-init
  # consumes it instead.
  image.modules.amazon.virtualisation.amazon-init.enable = false;
}
