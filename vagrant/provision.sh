#!/bin/bash
# Vagrant shell provisioner (runs as root inside each VM): Debian's docker.io, the project key for the
# SSH user, passwordless sudo for `become`, and a check that the private network sits on the interface
# inventories/vagrant.yml advertises. Idempotent: `vagrant provision` may run it any number of times.
set -euo pipefail

fail() {
    printf 'provision.sh on %s: %s\n' "$(hostname)" "$1" >&2
    [ $# -lt 2 ] || printf '    fix: %s\n' "$2" >&2
    exit 1
}

: "${PROVISIONER_USER:?set by the Vagrantfile}" "${PROVISIONER_ADDRESS:?set by the Vagrantfile}"
: "${PROVISIONER_INTERFACE:?set by the Vagrantfile}"
[ -n "${PROVISIONER_PUBKEY:-}" ] || fail "no project public key was passed in" \
    "run 'vagrant up' or 'vagrant provision' from the project directory; the Vagrantfile creates .vagrant/provisioner_ed25519 then"
case "$PROVISIONER_PUBKEY" in
    ssh-ed25519\ *) ;;
    *) fail "the project public key does not look like an ssh-ed25519 key" \
        "delete .vagrant/provisioner_ed25519* on the host and run 'vagrant provision'" ;;
esac

# --- Docker -------------------------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
if ! dpkg-query -W -f '${Status}' docker.io 2>/dev/null | grep -q 'install ok installed'; then
    apt-get update -q
    apt-get install -y -q docker.io
fi
version=$(dpkg-query -W -f '${Version}' docker.io)
case "$version" in
    20.10.*) ;;
    *) fail "docker.io $version is installed, but the overlay job needs Debian 11's 20.10 build (Consul cluster store)" \
        "use the debian/bullseye64 box" ;;
esac
systemctl enable --now docker.service
systemctl is-active -q docker.service || fail "docker.service is not active" "journalctl -u docker.service"

# --- project key and sudo -----------------------------------------------------------------------------
home=$(getent passwd "$PROVISIONER_USER" | cut -d: -f6)
[ -n "$home" ] || fail "user $PROVISIONER_USER does not exist"
install -d -m 700 -o "$PROVISIONER_USER" -g "$PROVISIONER_USER" "$home/.ssh"
keys="$home/.ssh/authorized_keys"
touch "$keys"
# Replace an earlier project key (same comment) so a regenerated key pair takes over cleanly.
comment=${PROVISIONER_PUBKEY##* }
grep -v -F -x -e "$PROVISIONER_PUBKEY" "$keys" | awk -v c="$comment" '$NF != c' > "$keys.new" || true
printf '%s\n' "$PROVISIONER_PUBKEY" >> "$keys.new"
chown "$PROVISIONER_USER:$PROVISIONER_USER" "$keys.new"
chmod 600 "$keys.new"
mv "$keys.new" "$keys"

# Vagrant boxes already grant the vagrant user passwordless sudo; make it explicit and checked, since the
# inventory connects as this user and relies on `become`.
if ! sudo -n -u "$PROVISIONER_USER" sudo -n true 2>/dev/null; then
    rule="/etc/sudoers.d/provisioner-$PROVISIONER_USER"
    printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$PROVISIONER_USER" > "$rule.tmp"
    chmod 440 "$rule.tmp"
    visudo -cq -f "$rule.tmp" || fail "generated sudoers rule $rule.tmp is invalid"
    mv "$rule.tmp" "$rule"
    sudo -n -u "$PROVISIONER_USER" sudo -n true || fail "passwordless sudo for $PROVISIONER_USER still does not work"
fi

# --- private network ----------------------------------------------------------------------------------
actual=$(ip -o -4 addr show | awk -v a="$PROVISIONER_ADDRESS" '{split($4, p, "/")} p[1] == a {print $2; exit}')
[ -n "$actual" ] || fail "no interface carries $PROVISIONER_ADDRESS" \
    "check the private_network settings of the provider (see the Vagrant section of README.md)"
[ "$actual" = "$PROVISIONER_INTERFACE" ] || fail \
    "$PROVISIONER_ADDRESS is on $actual, but the Vagrantfile and inventories/vagrant.yml expect $PROVISIONER_INTERFACE" \
    "set PRIVATE_INTERFACE in the Vagrantfile and docker.advertise_interface in inventories/vagrant.yml to $actual"

echo "provision.sh: $(hostname) ready: docker.io $version, key for $PROVISIONER_USER, $PROVISIONER_ADDRESS on $actual"
