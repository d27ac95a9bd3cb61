# fireactions' API credentials (#24 item 12), as data: the per-boot password file the
# runner-fleet-api-password unit writes (tmpfs, root only, never the Nix store), the unit, the
# name the scaler's LoadCredential= gives it, and the basic-auth user the renderer writes into
# basic_auth_users (render-fireactions-config.py API_USER).
{
  passwordFile = "/run/fireactions-api/password";
  unit = "runner-fleet-api-password.service";
  credential = "fireactions-api-password";
  user = "runner-fleet";
}
