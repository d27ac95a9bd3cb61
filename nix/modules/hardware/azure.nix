# Azure VM (started from our VHD): the same module the image is built with.
{ modulesPath, ... }:
{
  imports = [ "${modulesPath}/virtualisation/azure-image.nix" ];
}
