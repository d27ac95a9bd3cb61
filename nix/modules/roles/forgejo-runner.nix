# Roles "forgejo-runner" / "gitea-runner": an Actions runner that executes jobs
# directly on the host (label native-nix:host), so builds reuse the host's Nix
# store. Only for trusted repositories: jobs are not isolated from the host.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (config.runnerFleet) inventory host;

  # The runner registers against this URL at build time; inventory.json carries
  # it whenever the stack config sets runner-fleet:forgejo / runner-fleet:gitea.
  urlOf = kind: inventory.${kind}.url or "https://${kind}.invalid";
  labelsOf = kind: inventory.${kind}.labels or [ "native-nix:host" ];

  mkInstance = kind: package: {
    enable = true;
    name = "${host.name}-${kind}";
    inherit package;
    url = urlOf kind;
    # vault-agent renders "TOKEN=..." here; see vault-agent.nix.
    tokenFile = "/run/secrets/${kind}-runner-token";
    labels = labelsOf kind;
    hostPackages = with pkgs; [
      bash
      coreutils
      curl
      gawk
      git
      gnused
      nodejs
      wget
      config.nix.package
    ];
    settings.runner.capacity = 4;
  };

  enabled = kind: builtins.elem "${kind}-runner" host.roles;
in
{
  config = lib.mkMerge [
    (lib.mkIf (enabled "forgejo") {
      services.gitea-actions-runner.instances.forgejo = mkInstance "forgejo" pkgs.forgejo-runner;
      warnings = lib.optional (!(inventory ? forgejo)) "runner-fleet: inventory has no forgejo.url; ${host.name}'s runner cannot register";
    })
    (lib.mkIf (enabled "gitea") {
      services.gitea-actions-runner.instances.gitea = mkInstance "gitea" pkgs.gitea-actions-runner;
      warnings = lib.optional (!(inventory ? gitea)) "runner-fleet: inventory has no gitea.url; ${host.name}'s runner cannot register";
    })
  ];
}
