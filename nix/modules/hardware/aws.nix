# EC2 (started from our AMI). amazon-init would apply user-data as a NixOS
# configuration; cloud-init consumes it instead.
{ modulesPath, ... }:
{
  imports = [ "${modulesPath}/virtualisation/amazon-image.nix" ];
  virtualisation.amazon-init.enable = false;
}
