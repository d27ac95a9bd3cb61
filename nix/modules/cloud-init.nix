# cloud-init writes the contract files (/etc/runner-fleet/*) from user-data and
# runs runner-fleet-bootstrap. It does not configure the network (NixOS owns
# it), except on Azure: azure-common.nix sets network.enable = true because
# waagent needs cloud-init networking there, so ours is only a default.
{ lib, ... }:
{
  services.cloud-init = {
    enable = true;
    network.enable = lib.mkDefault false;
    settings = {
      # Keep only what user-data needs. users-groups applies user-data's
      # `users` entry: the deploy user (declared by Nix, so cloud-init only adds
      # the stack's SSH keys to it, cloudinit/distros create_user). Without it
      # a host started from an image could only be reached with the keys of
      # whatever inventory the image was built from.
      cloud_init_modules = [ "migrator" "seed_random" "bootcmd" "write-files" "growpart" "resizefs" "update_etc_hosts" "users-groups" ];
      cloud_config_modules = [ "runcmd" ];
      cloud_final_modules = [ "scripts-per-once" "scripts-per-boot" "scripts-per-instance" "scripts-user" "final-message" ];
    };
  };

  # amazon-init is switched off in hardware/aws.nix, where its option exists.
}
