# Image templates: the image variant (amazon, azure, raw, qemu) brings the
# real boot and disk setup. These defaults only let the plain configuration
# evaluate (e.g. under `nix flake check`), and lose to every variant.
{ lib, modulesPath, ... }:
let
  # Our raw/qcow2 images boot on Hetzner Cloud and DigitalOcean, KVM guests
  # whose disks are virtio: nixpkgs' disk-image variants import only
  # virtualisation/disk-image.nix, and the default initrd modules
  # (system/boot/kernel.nix) have no virtio driver, so stage 1 would not find
  # the root disk. Running hosts get the same profile from hardware/cloud-vm.nix.
  kvmGuest = { imports = [ "${modulesPath}/profiles/qemu-guest.nix" ]; };
in
{
  fileSystems."/" = lib.mkDefault {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  # Option-default priority (1500), below disk-image.nix's mkDefault (1000)
  # [ "/dev/vda" ]: a plain `boot.loader.grub.device` here would win over it
  # and leave the BIOS raw/qemu images without a bootloader.
  boot.loader.grub.devices = lib.mkOptionDefault [ "nodev" ];

  image.modules = {
    # amazon-init would apply user-data as a NixOS configuration; cloud-init
    # consumes it instead.
    amazon.virtualisation.amazon-init.enable = false;
    raw = kvmGuest;
    qemu = kvmGuest;
    raw-efi = kvmGuest;
    qemu-efi = kvmGuest;
  };
}
