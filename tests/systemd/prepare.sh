#!/bin/sh
# prepare.sh SRC: run by tests/systemd/run.sh inside the overlay, in a container
# that is not booted and has the host's network (for apt and pip). Installs
# what the checks use and the host may lack (into the overlay only), then the
# service the way an operator does, then the users of the checks.
set -eu
SRC=$1
export DEBIAN_FRONTEND=noninteractive

# Tools: logrotate (a real rotation), jq (the README's journal command), and
# what make install-service itself needs.
need=
command -v logrotate >/dev/null || need="$need logrotate"
command -v jq >/dev/null || need="$need jq"
command -v make >/dev/null || need="$need make"
command -v ip >/dev/null || need="$need iproute2"
command -v useradd >/dev/null || need="$need passwd"
python3 -c 'import ensurepip, venv' 2>/dev/null || need="$need python3-venv"
if [ -n "$need" ]; then
    echo "# apt-get install$need (in the overlay)"
    # The host's package lists may be stale or absent: update once if needed.
    # shellcheck disable=SC2086  # $need: words on purpose
    timeout 300 apt-get install -y -qq $need >/dev/null 2>&1 || {
        timeout 300 apt-get update -qq &&
            timeout 300 apt-get install -y -qq $need >/dev/null
    }
fi

echo "# make install-service"
cd "$SRC"
make install-service

# alice: a member of the service's group, not root, who drops lists.
id alice >/dev/null 2>&1 || useradd --create-home alice
usermod --append --groups imgdl-watch alice
echo "# prepared"
