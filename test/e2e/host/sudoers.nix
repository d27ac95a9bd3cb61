# The deploy user's sudoers line on the e2e test hosts, taken from the rules
# nix/modules/common.nix gives the deploy user (security.sudo.extraRules) and
# written the way NixOS' sudo module writes extraRules into /etc/sudoers
# (nixos/modules/security/sudo.nix: `<user>     <host>=(<runAs>)    <options>: <command>, ...`,
# host "ALL" and runAs "ALL:ALL" by default). Only the Nix package differs: the test
# hosts run Debian, whose nix-env is /usr/bin/nix-env.
{ repo, nixPackage ? "/usr" }:
let
  inherit (builtins) concatStringsSep map;
  module = import "${repo}/nix/modules/common.nix" {
    config = {
      runnerFleet = {
        inventory = { };
        host = { name = "e2e"; sshUser = "deploy"; sshPort = 22; };
      };
      nix.package = nixPackage;
    };
    lib = { mkDefault = x: x; };
    pkgs = { };
  };
  options = o: if o == [ ] then "" else "${concatStringsSep ":" o}: ";
  command = c: if builtins.isString c then c else "${options (c.options or [ ])}${c.command}";
  line = rule: user:
    "${user}     ${rule.host or "ALL"}=(${rule.runAs or "ALL:ALL"})    ${concatStringsSep ", " (map command rule.commands)}";
in
concatStringsSep "\n" (builtins.concatMap (rule: map (line rule) (rule.users or [ ])) module.security.sudo.extraRules) + "\n"
