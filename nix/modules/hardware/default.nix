# Provider modules for a host. Imports cannot depend on `config`, so the
# choice is made here, from the inventory record, before the module system runs.
{ disko }:
host:
let
  hostFile = ../../hosts + "/${host.name}.nix";
in
if host.provider == null then
  [ ./template.nix ]
else if host.provider == "aws" then
  [ ./aws.nix ]
else if host.provider == "azure" then
  [ ./azure.nix ]
else if host.provider == "hetzner" || host.provider == "digitalocean" then
  [ (import ./cloud-vm.nix host) ] ++ (if host.image == "stock" then [ disko.nixosModules.disko ./disko.nix ] else [ ])
else if host.provider == "existing" then
  # Machines we did not create bring their own hardware configuration.
  if !(builtins.pathExists hostFile) then
    throw "inventory: hosts.${host.name}: provider \"existing\" needs nix/hosts/${host.name}.nix (its hardware configuration)"
  # nixos-anywhere (install: true, which the inventory writes as image
  # "stock") partitions the disk the config names; the host file then holds no
  # fileSystems of its own.
  else if host.install or (host.image == "stock") then
    if (host.installDisk or null) == null then
      throw "inventory: hosts.${host.name}: install is true but installDisk is not set (the disk nixos-anywhere partitions, e.g. /dev/nvme0n1)"
    else
      [ hostFile disko.nixosModules.disko ./disko.nix ]
  else
    [ hostFile ]
else
  throw "inventory: hosts.${host.name}: unknown provider \"${host.provider}\""
