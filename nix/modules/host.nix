# The inventory record this machine is built from. The flake sets both
# options; every other module reads them instead of taking its own arguments.
{ lib, ... }:
{
  options.runnerFleet = {
    inventory = lib.mkOption {
      type = lib.types.attrs;
      description = "The whole inventory.json (vault address, SSH keys, stack).";
    };
    host = lib.mkOption {
      type = lib.types.attrs;
      description = "This host's entry in inventory.json (or an image template).";
    };
  };
}
