# A small NixOS module for fireactions (GitHub runners in Firecracker microVMs).
#
# It only runs the daemon against a config file; it does not generate the
# config. Ours is rendered on the host from pools.json + /run/secrets (see
# roles/fireactions.nix), because pool sizes change at runtime without a
# rebuild and the GitHub App key must stay out of the Nix store.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.fireactions;
  supervise = pkgs.callPackage ../pkgs/fireactions-supervise.nix { };
in
{
  options.services.fireactions = {
    enable = lib.mkEnableOption "fireactions";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ../pkgs/fireactions.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage nix/pkgs/fireactions.nix { }";
      description = "The fireactions package (the config format follows v0.4).";
    };

    configFile = lib.mkOption {
      type = lib.types.str;
      default = "/run/fireactions/config.yaml";
      description = ''
        Path of the config file at runtime. A string, not a Nix path, because the
        file holds the GitHub App key and must not be copied into the store.
      '';
    };

    preStart = lib.mkOption {
      type = lib.types.lines;
      default = "";
      description = "Shell run as root before every start; a failure fails the start.";
    };

    path = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = [ ];
      description = "Extra packages on the daemon's PATH.";
    };

    environment = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = { };
      description = "Extra environment for the daemon (e.g. CNI_PATH).";
    };
  };

  config = lib.mkIf cfg.enable {
    # Firecracker needs /dev/kvm. On x86 KVM comes as the kvm-intel/kvm-amd modules; on
    # aarch64 it is built into the kernel and those modules do not exist.
    boot.kernelModules = lib.optionals pkgs.stdenv.hostPlatform.isx86 [ "kvm-intel" "kvm-amd" ];
    # fireactions pulls runner images through containerd.
    virtualisation.containerd.enable = true;

    systemd.services.fireactions = {
      description = "fireactions runner manager";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" "containerd.service" ];
      wants = [ "network-online.target" ];
      requires = [ "containerd.service" ];
      path = [ pkgs.iproute2 pkgs.iptables ] ++ cfg.path;
      inherit (cfg) environment preStart;
      # Keep retrying: on first boot the secrets appear only after vault-agent logs in.
      startLimitIntervalSec = 0;
      serviceConfig = {
        # v0.4.0 exits 0 on errors; the wrapper turns an exit nobody asked for into a failure,
        # so Restart=on-failure fires. KillMode=mixed sends the stop signal to the wrapper,
        # which passes it on (and then knows the exit was asked for).
        ExecStart = "${lib.getExe supervise} ${lib.getExe cfg.package} server --config ${cfg.configFile}";
        KillMode = "mixed";
        RuntimeDirectory = "fireactions";
        RuntimeDirectoryMode = "0750";
        StateDirectory = "fireactions";
        WorkingDirectory = "/var/lib/fireactions";
        Restart = "on-failure";
        RestartSec = 10;
        # Give running microVMs time to stop cleanly.
        TimeoutStopSec = 150;
        LimitNOFILE = 65536;
      };
    };
  };
}
