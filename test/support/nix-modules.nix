# Helpers for test/nix.test.ts: call one of our NixOS modules as a plain
# function with the stand-in lib and packages (see nixlib-standin.nix), and
# list the definitions it makes at an option path with their priorities.
# A STAND-IN for the module system's collection step, not a replacement for it.
let
  lib = import ./nixlib-standin.nix;
  pkgs = import ./nixpkgs-standin.nix;
  fleet = import ../../nix/lib;

  # The config a module may read: the inventory record plus the few options of
  # ours or upstream's that our modules consult.
  configFor =
    {
      inventory,
      host,
      fireactions ? builtins.elem "fireactions" host.roles,
      consumers ? [ ],
      authorizedKeys ? inventory.sshAuthorizedKeys or [ ],
    }:
    {
      runnerFleet = {
        inherit inventory host;
        secrets = {
          inherit consumers;
          timeoutSec = 300;
        };
        cache.domain = null;
        fireactions = { inherit (import ../../nix/lib/vm-network.nix) bridge gateway; };
        # modules/registry-mirror.nix's read-only options on a host without a mirror.
        registryMirror = {
          ports = [ ];
          vmMetadata = null;
        };
        # modules/data-disks.nix's on a host without a containerd disk.
        dataDisks = {
          thinPoolDisk = null;
          thinPoolEncrypt = true;
        };
      };
      nix.package = pkgs.nix;
      services.fireactions.enable = fireactions;
      services.fireactions.configFile = "/run/fireactions/config.yaml";
      users.users.${host.sshUser}.openssh.authorizedKeys.keys = authorizedKeys;
    };

  # Every definition under `path` in a module's result, through mkIf (true
  # branches only), mkMerge and mkOverride: [ { priority; value; } ].
  defsAt =
    path: def:
    let
      go =
        prio: p: d:
        if builtins.isAttrs d && (d._type or null) == "if" then
          (if d.condition then go prio p d.content else [ ])
        else if builtins.isAttrs d && (d._type or null) == "merge" then
          builtins.concatMap (go prio p) d.contents
        else if builtins.isAttrs d && (d._type or null) == "override" then
          go d.priority p d.content
        else if p == [ ] then
          [ { priority = prio; value = d; } ]
        else if builtins.isAttrs d && d ? ${builtins.head p} then
          go prio (builtins.tail p) d.${builtins.head p}
        else
          [ ];
    in
    go 100 path def;

  # A module file's result: its `config` part when it declares one.
  body = r: if r ? config then r.config else r;

  call =
    {
      file,
      inventory,
      hostName,
      ...
    }@args:
    let
      host = inventory.hosts.${hostName} or fleet.templates.${hostName};
      m = import file;
      config = configFor ({ inherit inventory host; } // builtins.removeAttrs args [ "file" "inventory" "hostName" "pkgs" ]);
      # pkgs: another package set (test/support/writer-calls.nix records writer calls).
      r = m {
        inherit config lib;
        pkgs = args.pkgs or pkgs;
        modulesPath = "/modulesPath";
      };
    in
    body r;
in
{
  inherit lib pkgs fleet defsAt call configFor;
  readInventory = fleet.readInventory;
}
