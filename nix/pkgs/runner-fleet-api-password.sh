# runner-fleet-api-password [FILE]: the fireactions API password for this boot, written once.
# FILE (default /run/fireactions-api/password) is on tmpfs, so every boot gets a new one; while it
# exists it is kept, because fireactions reads its basic-auth accounts only when it starts
# (docs/upstream.md) and the daemon, the drain and the scaler must agree. Root only (0600 in a
# 0700 directory). Nothing here can fail short of a full /run.
file=${1:-/run/fireactions-api/password}
dir=$(dirname "$file")
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
if [ -s "$file" ]; then
  exit 0
fi
tmp=$(mktemp "$dir/.password.XXXXXX")
# 32 bytes from the kernel's CSPRNG as base64url without padding: 43 printable characters, no
# spaces or quotes (the renderer's rule, and safe in a curl netrc or -K file).
head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=' > "$tmp"
echo >> "$tmp"
mv -f "$tmp" "$file"
echo "runner-fleet-api-password: wrote a new password to $file"
