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
  # The deploy user is root on every host, and so is whoever holds the deploy
  # key: the rules below name commands, not what they run. Any
  # /nix/store/*/bin/switch-to-configuration or activate-rs is accepted with
  # any arguments, and as a trusted Nix user (below) the deploy user can put
  # any store path there, so it can activate a system of its own making. That
  # is what a deploy is; the list only keeps typos and other programs out
  # (sudo refuses commands not named here). Making it hold would take closures
  # signed by a deploy key the hosts trust, an untrusted deploy user and a
  # root-owned activation wrapper that checks the signature (README "Trust").
  # colmena runs nix-env --set and switch-to-configuration itself; deploy-rs
  # runs its activate-rs wrapper, which does the same two steps (plus the
  # magic-rollback wait). sudo compares inodes, so the store path of nix-env
  # also matches /run/current-system/sw/bin/nix-env. deploy-rs confirms a
  # magic-rollback deploy with `sudo -u root rm /tmp/deploy-rs-canary-<store
  # hash>` (src/deploy.rs confirm_profile, lib.rs make_lock_path): exactly that
  # file, 32 characters of a store hash (@storeHash@), no wildcard that could
  # also match a space and more arguments. colmena's remote build (remoteBuild
  # always, or auto across architectures) realises the system's derivation with
  # `sudo -H -- nix-store --no-gc-warning --realise <drv>` (src/nix/host/ssh.rs
  # realize_remote): a sudoers regular expression (sudo 1.9.10+) admits exactly
  # one /nix/store/<hash>-<name>.drv, where a wildcard would also admit more
  # paths and options such as --add-root. The list lives in
  # ../lib/deploy-sudo.json so the end-to-end test hosts get the same rules.
  storeHash = builtins.concatStringsSep "" (builtins.genList (_: "[0-9a-z]") 32);
  allowed = map (builtins.replaceStrings [ "@nix@" "@storeHash@" ] [ "${config.nix.package}" storeHash ])
    (builtins.fromJSON (builtins.readFile ../lib/deploy-sudo.json)).commands;
in
{
  system.stateVersion = lib.mkDefault "25.11";

  # Plain priority: amazon-image.nix and azure-common.nix set mkDefault "" (take
  # the name from the cloud), and two mkDefaults would conflict. Image
  # templates (provider null) keep the image's own choice.
  networking.hostName = lib.mkIf (host.provider != null) host.name;

  nix.settings = {
    experimental-features = [ "nix-command" "flakes" ];
    # Store paths copied by deploy-rs/colmena are signed by no one; the deploy
    # user must be trusted to import them (which alone makes it root-equivalent:
    # a trusted user can add any store path and set any Nix option).
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
      # Forced: amazon-image.nix and azure-common.nix set "prohibit-password"
      # at normal priority. Root never logs in; the deploy user uses sudo.
      PermitRootLogin = lib.mkForce "no";
    };
  };

  # Users come from Nix only: no passwords anywhere, keys from the inventory.
  # users-groups.nix asserts, with mutableUsers = false, that root or a wheel
  # user can log in; ours is neither by design (the deploy user has no wheel,
  # only the sudo rules below). allowNoPasswordLogin turns that check off, and
  # the assertion below puts back the part that matters: a key to log in with.
  users.mutableUsers = false;
  users.allowNoPasswordLogin = true;
  assertions = [
    {
      assertion = config.users.users.${deployUser}.openssh.authorizedKeys.keys != [ ];
      message = "runner-fleet: inventory.sshAuthorizedKeys is empty; nobody could log in to ${host.name} as ${deployUser}";
    }
  ];
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
