# Role "cache": a Nix binary cache. Harmonia serves this host's store on
# loopback; Caddy terminates TLS in front of it. Store paths are signed on the
# fly with a key vault-agent puts in /run/secrets.
{
  config,
  lib,
  ...
}:
let
  inherit (config.runnerFleet) host;
  cfg = config.runnerFleet.cache;
  listen = "127.0.0.1:5000";
  # Templates (images) have no address yet.
  site = if cfg.domain != null then cfg.domain else if host.address != null then host.address else "localhost";
in
{
  options.runnerFleet.cache.domain = lib.mkOption {
    type = lib.types.nullOr lib.types.str;
    # cache.domains.<host> in the stack config (inventory.json `cache.domains`).
    default = config.runnerFleet.inventory.cache.domains.${host.name} or null;
    description = ''
      DNS name for a publicly trusted (ACME) certificate. Without one, Caddy
      serves the host address with a certificate from its internal CA, which
      clients must trust explicitly.
    '';
  };

  config = lib.mkIf (builtins.elem "cache" host.roles) {
    services.harmonia = {
      enable = true;
      signKeyPaths = [ "/run/secrets/cache-signing-key" ];
      settings = {
        bind = listen;
        # Below cache.nixos.org (40): clients ask us first.
        priority = 30;
      };
    };

    # Harmonia loads the key as a credential at start: it starts after
    # runner-fleet-secrets has seen the key rendered (modules/secrets.nix),
    # instead of a condition checked once at boot, before the agent logged in.

    services.caddy = {
      enable = true;
      virtualHosts.${site}.extraConfig = ''
        ${lib.optionalString (cfg.domain == null) "tls internal"}
        encode zstd gzip
        reverse_proxy ${listen}
      '';
    };

    networking.firewall.allowedTCPPorts = [ 80 443 ];
  };
}
