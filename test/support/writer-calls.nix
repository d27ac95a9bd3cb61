# Records the nixpkgs script-writer calls one nix/ file makes, so
# test/python-writers.test.ts can run the checks the writers run at build time
# (flake8 for writers.writePython3*, shellcheck for writeShellApplication,
# `bash -n` for writeShellScript*) on each script as the writer assembles it.
#
# A STAND-IN for the writers: each call prints one trace line
# "RUNNER_FLEET_WRITER <json>" with its arguments and returns a package record
# (nixpkgs-standin.nix's shape). The file is evaluated as nixpkgs would call
# it: a NixOS module (it takes `config`) once for every host of the inventory
# and every image template, anything else like callPackage does, and the
# result is forced completely (deepSeq), so every call it makes is reached.
{ file, inventory }:
let
  lib = import ./nixlib-standin.nix;
  standin = import ./nixpkgs-standin.nix;
  harness = import ./nix-modules.nix;
  fleet = import ../../nix/lib;
  inv = fleet.readInventory inventory;

  pkg = name: {
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };
  record =
    kind: name: args:
    builtins.trace "RUNNER_FLEET_WRITER ${builtins.toJSON ({ inherit kind name; } // args)}" (pkg name);
  source = content: if builtins.isPath content then builtins.readFile content else content;

  python3 =
    bin: name: attrs: content:
    record "python3" name {
      inherit bin;
      flakeIgnore = attrs.flakeIgnore or [ ];
      doCheck = attrs.doCheck or true;
      content = source content;
    };
  shellScript = bin: name: text: record "shellScript" name { inherit bin; text = source text; };

  writers = standin.writers // {
    writePython3 = python3 false;
    writePython3Bin = python3 true;
  };
  pkgs = standin // {
    inherit writers;
    runtimeShell = "/nix/store/00000000000000000000000000000000-bash/bin/bash";
    writeShellScript = shellScript false;
    writeShellScriptBin = shellScript true;
    writeShellApplication =
      args:
      record "shellApplication" args.name {
        inherit (args) text;
        runtimeInputs = map (p: "${p}") (args.runtimeInputs or [ ]);
        excludeShellChecks = args.excludeShellChecks or [ ];
        extraShellCheckFlags = args.extraShellCheckFlags or [ ];
        bashOptions = args.bashOptions or [ "errexit" "nounset" "pipefail" ];
        runtimeEnv = args.runtimeEnv or null;
        inheritPath = args.inheritPath or true;
        checkPhase = args.checkPhase or null;
      };
  };

  f = import file;
  formals = if builtins.isFunction f then builtins.functionArgs f else { };
  isModule = formals ? config || formals ? pkgs;
  hostNames = builtins.attrNames inv.hosts ++ builtins.attrNames fleet.templates;
  asModule =
    map (
      hostName:
      harness.call {
        inherit file hostName pkgs;
        inventory = inv;
      }
    ) hostNames;
  # callPackage: every formal from the packages (or a plain record), lib the stand-in.
  asPackage = f (
    builtins.mapAttrs (
      n: _: if n == "lib" then lib else pkgs.${n} or (pkg n)
    ) formals
  );
  result =
    if !builtins.isFunction f then
      f
    else if isModule then
      asModule
    else
      asPackage;
in
builtins.deepSeq result true
