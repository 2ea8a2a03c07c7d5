#!/usr/bin/env bash
# What a power cut leaves of a provider's acknowledged writes: not run by CI (it needs
# root, a loop device and mount); run by hand, as root, with release binaries:
#
#   cargo build --release --bin tether-provider
#   sudo replication-tests/power-cut/run.sh target/release [ROUNDS] [SECONDS] [VALUE_BYTES]
#
# Each round makes an ext4 file system in a loop device, loads a provider's store on it,
# serves it, and writes adds one at a time through `tether-provider write`, each
# acknowledged once durable. After SECONDS (3) the provider is frozen (SIGSTOP) and the
# device's image copied: the copy holds what the file system had handed to the device,
# and no more, as a machine whose power was cut at that instant would (its journal not
# yet committed; a device's own volatile cache is not modelled, it has none here). The
# copy is mounted (the journal replayed, as at the next boot) and the store in it
# opened with `tether-provider status`: every add the writer saw acknowledged must be
# in it. Exit status 1 if any round lost one, or found the store unopenable. Each add
# carries a description of VALUE_BYTES (300); past about 128 KiB sled keeps the nodes
# holding them in files of their own (`blobs/`), which a flush must sync as well.
set -euo pipefail

BIN=$(cd "${1:?usage: run.sh BIN_DIR [ROUNDS] [SECONDS]}" && pwd)
ROUNDS=${2:-3}
SECONDS_WRITING=${3:-3}
VALUE_BYTES=${4:-300}
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (losetup, mkfs.ext4, mount)" >&2; exit 2; }
for tool in losetup mkfs.ext4 mount umount python3; do
    command -v "$tool" > /dev/null || { echo "run.sh: needs $tool" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tether-power-cut.XXXXXX")
LOOPS=()
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2> /dev/null || true; done
    for mnt in "$WORK"/*/mnt "$WORK"/*/copy; do mountpoint -q "$mnt" && umount "$mnt"; done
    for loop in "${LOOPS[@]}"; do losetup -d "$loop" 2> /dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# The adds: more than a round can write.
VALUE_BYTES=$VALUE_BYTES python3 - > "$WORK/adds.ldif" <<'PY'
import os
size = int(os.environ["VALUE_BYTES"])
count = max(100, min(400000, 120_000_000 // (size + 200)))
for i in range(count):
    print(f"dn: uid=u{i},ou=people,dc=example,dc=com\nchangetype: add\nobjectClass: inetOrgPerson\n"
          f"uid: u{i}\ncn: User {i}\nsn: {i}\ndescription: {'x' * size}\n")
PY
printf 'dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n\ndn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n' > "$WORK/base.ldif"

lost_any=0
for round in $(seq "$ROUNDS"); do
    R="$WORK/$round"
    mkdir -p "$R/mnt" "$R/copy"
    (umask 077 && head -c 32 /dev/urandom | base64 > "$R/writer.key")
    truncate -s 512M "$R/img"
    mkfs.ext4 -q -F "$R/img"
    LOOP=$(losetup -f --show "$R/img"); LOOPS+=("$LOOP")
    mount "$LOOP" "$R/mnt"
    cat > "$R/p.toml" <<EOT
data_dir = "$R/mnt/data"
listen   = "127.0.0.1:0"
control  = "$R/control.sock"
suffix   = "dc=example,dc=com"
[writer]
secret_file = "$R/writer.key"
EOT
    "$BIN/tether-provider" load -c "$R/p.toml" "$WORK/base.ldif" > "$R/load.out" 2>&1 || { cat "$R/load.out" >&2; exit 2; }
    "$BIN/tether-provider" serve -c "$R/p.toml" > "$R/serve.log" 2>&1 &
    PROVIDER=$!; PIDS+=("$PROVIDER")
    for _ in $(seq 100); do [ -S "$R/control.sock" ] && break; sleep 0.1; done
    "$BIN/tether-provider" write -c "$R/p.toml" "$WORK/adds.ldif" > /dev/null 2> "$R/write.err" &
    WRITER=$!; PIDS+=("$WRITER")
    sleep "$SECONDS_WRITING"
    kill -STOP "$PROVIDER"
    cp --sparse=always "$R/img" "$R/copy.img"
    kill -KILL "$PROVIDER"
    wait "$PROVIDER" 2> /dev/null || true
    wait "$WRITER" 2> /dev/null || true
    umount "$R/mnt"
    acked=$(grep -o '[0-9]* records\? applied' "$R/write.err" | grep -o '^[0-9]*' || echo "?")
    LOOP2=$(losetup -f --show "$R/copy.img"); LOOPS+=("$LOOP2")
    mount "$LOOP2" "$R/copy"
    sed "s#$R/mnt/data#$R/copy/data#" "$R/p.toml" > "$R/copy.toml"
    if status=$("$BIN/tether-provider" status -c "$R/copy.toml" 2>&1); then
        entries=$(grep -o 'entries [0-9]*' <<< "$status" | grep -o '[0-9]*$')
        # The two entries of the base, then one per add.
        present=$((entries - 2))
        if [ "$acked" = "?" ] || [ "$present" -lt "$acked" ]; then
            echo "round $round: $acked adds acknowledged, $present in the store after the cut: LOST $((acked - present))"
            lost_any=1
        else
            echo "round $round: $acked adds acknowledged, $present in the store after the cut"
        fi
    else
        echo "round $round: $acked adds acknowledged; the store after the cut does not open:"
        grep -v '^warning' <<< "$status" | sed 's/^/    /'
        lost_any=1
    fi
    umount "$R/copy"
done
exit "$lost_any"
