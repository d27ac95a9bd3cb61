# Image templates: the image variant (amazon, azure, qcow2, raw) brings the
# real boot and disk setup. These defaults only let the plain configuration
# evaluate (e.g. under `nix flake check`).
{ lib, ... }:
{
  fileSystems."/" = lib.mkDefault {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  boot.loader.grub.device = lib.mkDefault "nodev";

  # amazon-init would apply user-data as a NixOS configuration; cloud-init
  # consumes it instead.
  image.modules.amazon.virtualisation.amazon-init.enable = false;
}
