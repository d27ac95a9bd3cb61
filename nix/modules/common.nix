# Baseline for every host: Nix settings, SSH with keys only, and the deploy
# user whose sudo rights cover exactly what deploy-rs/colmena, the pool push
# and the seed of existing machines need.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (config.runnerFleet) inventory host;
  deployUser = host.sshUser;
  # The commands the deploy user may run as root; anything else is refused.
  # colmena runs nix-env --set and switch-to-configuration itself; deploy-rs
  # runs its activate-rs wrapper, which does the same two steps (plus the
  # magic-rollback wait). sudo compares inodes, so the store path of nix-env
  # also matches /run/current-system/sw/bin/nix-env. deploy-rs confirms a
  # magic-rollback deploy with `sudo -u root rm /tmp/deploy-rs-canary-<store
  # hash>` (src/deploy.rs confirm_profile, lib.rs make_lock_path): exactly that
  # file, 32 characters of a store hash (@storeHash@), no wildcard that could
  # also match a space and more arguments. The list lives in
  # ../lib/deploy-sudo.json so the end-to-end test hosts get the same rules.
  storeHash = builtins.concatStringsSep "" (builtins.genList (_: "[0-9a-z]") 32);
  allowed = map (builtins.replaceStrings [ "@nix@" "@storeHash@" ] [ "${config.nix.package}" storeHash ])
    (builtins.fromJSON (builtins.readFile ../lib/deploy-sudo.json)).commands;
in
{
  system.stateVersion = lib.mkDefault "25.11";

  networking.hostName = lib.mkDefault host.name;

  nix.settings = {
    experimental-features = [ "nix-command" "flakes" ];
    # Store paths copied by deploy-rs/colmena are signed by no one; the deploy
    # user must be trusted to import them.
    trusted-users = [ "root" deployUser ];
    auto-optimise-store = true;
  };
  nix.gc = {
    automatic = true;
    dates = "weekly";
    options = "--delete-older-than 30d";
  };

  services.openssh = {
    enable = true;
    ports = [ host.sshPort ];
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "no";
    };
  };

  # Users come from Nix only: no passwords anywhere, keys from the inventory.
  users.mutableUsers = false;
  users.users.${deployUser} = {
    isNormalUser = true;
    description = "runner-fleet deploy user";
    openssh.authorizedKeys.keys = inventory.sshAuthorizedKeys or [ ];
  };
  users.users.root.hashedPassword = "!";

  security.sudo = {
    enable = true;
    execWheelOnly = false;
    wheelNeedsPassword = true;
    extraRules = [
      {
        users = [ deployUser ];
        commands = map (command: {
          inherit command;
          options = [ "NOPASSWD" ];
        }) allowed;
      }
    ];
  };

  environment.systemPackages = with pkgs; [ jq curl htop ];
}
