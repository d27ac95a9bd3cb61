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
      # packages.<system>.<role>-<variant>, e.g. fireactions-amazon.
      imagesFor =
        system:
        let
          arch = lib.removeSuffix "-linux" system;
          # Azure's image module targets x86_64 (Generation 1, BIOS).
          variants = [ "amazon" "qcow2" "raw" ] ++ lib.optional (arch == "x86_64") "azure";
          roles = [ "fireactions" "forgejo-runner" "cache" ];
        in
        lib.listToAttrs (
          lib.concatMap (
            role:
            map (variant: {
              name = "${role}-${variant}";
              value = self.nixosConfigurations."${role}-${arch}".config.system.build.images.${variant};
            }) variants
          ) roles
        );
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
          mkNode = host: { imports = hostModules host; };
        }
      );

      # Schema and activation checks for every deploy node (`nix flake check`).
      checks = lib.genAttrs systems (system: deploy-rs.lib.${system}.deployChecks self.deploy);
    };
}
