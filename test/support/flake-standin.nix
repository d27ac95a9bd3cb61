# Evaluates nix/flake.nix's `outputs` with STAND-IN inputs (CI cannot fetch
# nixpkgs, deploy-rs, colmena or disko): each stand-in records what the flake
# asked of it, so test/nix.test.ts can check the wiring (which nodes each
# system's checks see, which image variant each package is, what the deploy
# shell holds) without building anything.
{ inventoryFile ? null }:
let
  lib = import ./nixlib-standin.nix;
  pkgs = import ./nixpkgs-standin.nix;
  flake = import ../../nix/flake.nix;
  pkgOf = name: pkgs.coreutils // { inherit name; };
  systems = [ "x86_64-linux" "aarch64-linux" ];
  perSystem = f: builtins.listToAttrs (map (s: { name = s; value = f s; }) systems);

  nixpkgs = {
    # `import nixpkgs { system; config; }` reads this file.
    outPath = ./nixpkgs-entry.nix;
    # A flake input's source info (our flake.lock's nixpkgs).
    rev = "8fd9daa3db09ced9700431c5b7ad0e8ba199b575";
    shortRev = "8fd9daa";
    lastModifiedDate = "20260510162830";
    lib = lib // {
      inherit (builtins) listToAttrs concatMap;
      removeSuffix = suffix: s:
        let n = builtins.stringLength s - builtins.stringLength suffix; in
        if n >= 0 && builtins.substring n (builtins.stringLength suffix) s == suffix then builtins.substring 0 n s else s;
      getName = p: p.pname or p.name;
      # A NixOS system: remembers its modules; images are named by variant.
      # `adds`: what the real lib.nixosSystem defines besides the caller's
      # modules (nixpkgs flake.nix: `config.nixpkgs.flake.source = self.outPath`)
      # and takes from its lib (lib/flake-version-info.nix: versionSuffix
      # ".<lastModifiedDate 0..8>.<shortRev>", revisionWithDefault = self.rev),
      # which nixos/modules/misc/version.nix turns into system.nixos.*.
      nixosSystem = args: {
        modules = args.modules;
        adds = {
          nixpkgs.flake.source = nixpkgs.outPath;
          system.nixos = {
            versionSuffix = ".${builtins.substring 0 8 nixpkgs.lastModifiedDate}.${nixpkgs.shortRev}";
            revision = nixpkgs.rev;
          };
        };
        config.system.build.images = builtins.listToAttrs (map (v: { name = v; value = "image:${v}"; })
          [ "amazon" "azure" "raw" "raw-efi" "qemu" "qemu-efi" ]);
      };
    };
  };
  deploy-rs = {
    lib = perSystem (system: {
      activate.nixos = cfg: "activate:${system}";
      deployChecks = deploy: { nodes = builtins.attrNames deploy.nodes; };
    });
    packages = perSystem (_: { deploy-rs = pkgOf "deploy-rs"; });
  };
  colmena = {
    lib.makeHive = hive: hive // { __schema = "v0.5"; };
    packages = perSystem (_: { colmena = pkgOf "colmena"; });
  };
  disko.nixosModules.disko = "disko-module";
  self = outputs;
  outputs = flake.outputs { inherit self nixpkgs deploy-rs colmena disko; };
in
outputs
