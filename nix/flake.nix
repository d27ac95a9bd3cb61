{
  description = "runner-fleet: NixOS runner hosts, their images and deploy targets";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    deploy-rs = {
      url = "github:serokell/deploy-rs";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    colmena = {
      url = "github:zhaofengli/colmena";
      inputs.nixpkgs.follows = "nixpkgs";
      # Only colmena's own checks use `stable`; its flake-utils and
      # flake-compat are the ones deploy-rs already brings. One nixpkgs to fetch.
      inputs.stable.follows = "nixpkgs";
      inputs.flake-utils.follows = "deploy-rs/utils";
      inputs.flake-compat.follows = "deploy-rs/flake-compat";
    };
    disko = {
      url = "github:nix-community/disko";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      deploy-rs,
      colmena,
      disko,
    }:
    let
      inherit (nixpkgs) lib;
      fleet = import ./lib;

      # $RUNNER_FLEET_INVENTORY (with --impure) or the example, see docs/contracts.md.
      inventory = fleet.readInventory (fleet.inventoryPath ./inventory.example.json);

      systems = [ "x86_64-linux" "aarch64-linux" ];

      # Only vault (BSL) is unfree; allow it by name, nothing else.
      nixpkgsConfig.allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) [ "vault" "vault-bin" ];
      nixpkgsFor = system: import nixpkgs { inherit system; config = nixpkgsConfig; };

      hardware = import ./modules/hardware { inherit disko; };

      # Everything that makes `host` itself, shared by nixosSystem and colmena.
      hostModules = host: [
        ./modules
        { runnerFleet = { inherit inventory host; }; }
      ] ++ hardware host;

      # What lib.nixosSystem adds to every system besides our modules: the
      # nixpkgs.flake.source module of nixpkgs' flake.nix, and its lib's
      # version info (lib/flake-version-info.nix: versionSuffix, revision).
      # colmena's hive calls nixos/lib/eval-config.nix with plain lib, so its
      # nodes get them here; without, nix.registry, nix.nixPath and
      # system.nixos.version differed and colmena built another system.
      nixosSystemParity = {
        nixpkgs.flake.source = nixpkgs.outPath;
        system.nixos.versionSuffix = ".${builtins.substring 0 8 (nixpkgs.lastModifiedDate or "19700101")}.${nixpkgs.shortRev or "dirty"}";
        system.nixos.revision = nixpkgs.rev or null;
      };

      mkSystem =
        host:
        lib.nixosSystem {
          modules = hostModules host ++ [
            {
              nixpkgs.hostPlatform = host.system;
              nixpkgs.config = nixpkgsConfig;
            }
          ];
        };

      hostConfigurations = fleet.nixosConfigurations { inherit inventory mkSystem; };
      templateConfigurations = builtins.mapAttrs (_: mkSystem) fleet.templates;
      clashes = builtins.attrNames (builtins.intersectAttrs templateConfigurations hostConfigurations);

      # Images per system, built from the role templates of that arch:
      # packages.<system>.<role>-<variant>, e.g. fireactions-amazon. The names
      # are the contract with components/images/source.ts (NIX_VARIANT); the
      # values are nixpkgs' image variants (nixos/modules/image/images.nix has
      # no "qcow2": its qcow2 BIOS image is "qemu"). On x86_64 raw and qcow2
      # are the BIOS variants (raw, qemu), which hardware/cloud-vm.nix matches
      # on running hosts; on aarch64 grub has no non-EFI target, so they are
      # the EFI variants (raw-efi, qemu-efi), matched the same way.
      imageVariants = arch: {
        amazon = "amazon";
        raw = if arch == "aarch64" then "raw-efi" else "raw";
        qcow2 = if arch == "aarch64" then "qemu-efi" else "qemu";
        azure = "azure";
      };
      imagesFor =
        system:
        let
          arch = lib.removeSuffix "-linux" system;
          # Azure's image module targets x86_64 (Generation 1, BIOS).
          variants = [ "amazon" "qcow2" "raw" ] ++ lib.optional (arch == "x86_64") "azure";
          roles = fleet.templateRoles;
        in
        lib.listToAttrs (
          lib.concatMap (
            role:
            map (variant: {
              name = "${role}-${variant}";
              value = self.nixosConfigurations."${role}-${arch}".config.system.build.images.${(imageVariants arch).${variant}};
            }) variants
          ) roles
        );

      # The tools the deploy runs, from this flake's inputs, so their versions
      # are locked with the hive and the nodes they read: colmena from the same
      # input as colmenaHive (its schema), deploy-rs from the input whose lib
      # builds deploy.nodes. `nix develop ./nix#deploy --command pulumi up`.
      deployToolsFor =
        system:
        let
          pkgs = nixpkgsFor system;
        in
        [
          deploy-rs.packages.${system}.deploy-rs
          colmena.packages.${system}.colmena
          pkgs.nixos-anywhere
          pkgs.hcloud
          pkgs.hcloud-upload-image
          pkgs.azure-cli
          pkgs.awscli2
          pkgs.openssh
          pkgs.coreutils
        ];
    in
    {
      lib = fleet;

      nixosConfigurations =
        if clashes != [ ] then
          throw "inventory: host name(s) ${toString clashes} clash with image templates"
        else
          hostConfigurations // templateConfigurations;

      packages = lib.genAttrs systems (
        system:
        let
          pkgs = nixpkgsFor system;
        in
        imagesFor system
        // {
          fireactions = pkgs.callPackage ./pkgs/fireactions.nix { };
          render-fireactions-config = pkgs.callPackage ./pkgs/render-fireactions-config.nix { };
          deploy-tools = pkgs.buildEnv {
            name = "runner-fleet-deploy-tools";
            paths = deployToolsFor system;
          };
        }
      );

      devShells = lib.genAttrs systems (
        system:
        let
          pkgs = nixpkgsFor system;
        in
        {
          deploy = pkgs.mkShell { packages = deployToolsFor system; };
        }
      );

      deploy.nodes = fleet.deployNodes {
        inherit inventory;
        mkActivate =
          host: deploy-rs.lib.${host.system}.activate.nixos self.nixosConfigurations.${host.name};
      };

      colmenaHive = colmena.lib.makeHive (
        fleet.colmenaHive {
          inherit inventory nixpkgsFor;
          mkNode = host: { imports = hostModules host ++ [ nixosSystemParity ]; };
        }
      );

      # Schema and activation checks (`nix flake check`), per system for that
      # system's nodes only: deploy-activate builds every node's profile, and
      # checks.x86_64-linux must not need an aarch64 builder.
      checks = lib.genAttrs systems (
        system:
        deploy-rs.lib.${system}.deployChecks {
          nodes = builtins.intersectAttrs (fleet.forSystem system inventory).hosts self.deploy.nodes;
        }
      );
    };
}
