# runner-fleet-data-disk: make one data disk ready for its purpose (#23).
#   runner-fleet-data-disk --device PATH --mount DIR --label LABEL [--wait SECONDS] [--print]
# Waits for the disk at its stable path (Azure's LUN link, EBS's NVMe serial link), formats it
# ext4 ONLY when it holds no filesystem or partition table at all (first boot), then mounts it.
# A disk with anything on it is never formatted: a wrong device path then fails to mount or mounts
# what it has, it never wipes it. --print shows what it would do and changes nothing.
device="" mountpoint="" label="" wait_s=120 print=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --mount) mountpoint=$2; shift 2 ;;
    --label) label=$2; shift 2 ;;
    --wait) wait_s=$2; shift 2 ;;
    --print) print=1; shift ;;
    *) echo "runner-fleet-data-disk: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$device" ] || [ -z "$mountpoint" ] || [ -z "$label" ]; then
  echo "runner-fleet-data-disk: --device, --mount and --label are required" >&2
  exit 2
fi
log() { echo "runner-fleet-data-disk: $device -> $mountpoint: $*"; }

waited=0
while [ ! -b "$device" ]; do
  if [ "$waited" -ge "$wait_s" ]; then
    log "no block device after ${wait_s}s" >&2
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done

if mountpoint -q "$mountpoint"; then
  log "already mounted"
  exit 0
fi
# blkid -p probes the device itself (no cache): exit 2 means it found nothing at all.
found=0
blkid -p -o export "$device" >/dev/null 2>&1 || found=$?
if [ "$found" -eq 0 ]; then
  action="mount (it has $(blkid -p -o value -s TYPE "$device" 2>/dev/null || echo a partition table or filesystem))"
elif [ "$found" -eq 2 ]; then
  action="format ext4 (label $label), then mount"
else
  log "blkid failed ($found); leaving the disk alone" >&2
  exit 1
fi
if [ "$print" -eq 1 ]; then
  log "would $action"
  exit 0
fi
if [ "$found" -eq 2 ]; then
  log "empty: formatting ext4, label $label"
  mkfs.ext4 -q -L "$label" "$device"
fi
mkdir -p "$mountpoint"
mount -o defaults,discard "$device" "$mountpoint"
log "mounted"
