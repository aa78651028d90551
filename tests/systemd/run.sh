#!/usr/bin/env bash
# make test-systemd: the shipped unit, installed with `make install-service`,
# under a real systemd (252 on Debian 12), checked for what an operator relies on.
#
#   tests/systemd/run.sh [--preflight] [CHECKOUT]    as root; CHECKOUT: this tree by default
#
# The machine's PID 1 need not be systemd. systemd-nspawn boots /lib/systemd/systemd
# as PID 1 of a container whose root is an overlayfs of this machine's / (never
# written) with a tmpfs upper layer:
#   - in a cgroup2 of its own, created under ours and removed at the end;
#   - in a network namespace of its own: only its lo, where the test server runs,
#     so no check sends a packet out of the container;
#   - with bpf() let through nspawn's seccomp filter (--system-call-filter=bpf):
#     without it systemd silently runs units without their IPAddressDeny=;
#   - with a fresh machine id, an empty fstab, and the host's enabled units masked.
# First a container that is not booted, with the host's network (apt, pip), runs
# prepare.sh on a copy of CHECKOUT: logrotate and jq into the overlay, then
# `make install-service`. Then the container boots, and checks.sh runs its checks
# through nsenter. Everything mounted lives in a private mount namespace; the
# whole run is bounded by TEST_SYSTEMD_TIMEOUT (the teardown may add a minute
# at most); a supervisor outside that namespace kills
# the container's cgroup and removes the temporary folder whatever happened,
# then checks that nothing is left ("teardown").
#
# Output: one line per check on stdout, "ok   NAME  detail" or "FAIL NAME  detail",
# then "test-systemd: N passed, M failed". Progress goes to stderr as "# ..." lines.
# 2 to 3 minutes (pip in the install, and the watchdog check waits out WatchdogSec=30), plus apt on
# a fresh machine. On the host it may apt-get install systemd-container (which
# brings a systemd upgrade and libnss-mymachines); all else it makes (a folder
# in /tmp, a cgroup, /run/systemd/nspawn if missing) it removes.
#
# Exit: 0  every check passed
#       1  a check failed, or the run passed its time limit
#       2  usage: CHECKOUT is not an imgdl-watch tree
#       77 this machine cannot run it: one line on stdout says why (not Linux, not
#          root, no cgroup2, no overlayfs, systemd-nspawn not installable)
# --preflight stops after the machine checks and installs: exit 0 or 77.
#
# Env: TEST_SYSTEMD_TIMEOUT       hard limit on the whole run, in seconds (900)
#      TEST_SYSTEMD_MAX_EXPOSURE  highest `systemd-analyze security` exposure that passes (1.5)
#      TEST_SYSTEMD_KEEP=DIR      keep the install and boot logs and the container's journal there
#      TEST_SYSTEMD_NSPAWN_ARGS   nspawn options for the boot (--system-call-filter=bpf; ""
#                                 shows nspawn's default filter turning IPAddressDeny= off)
set -u -o pipefail

ME=$(readlink -f "$0")
HERE=${ME%/*}
UNIT=imgdl-watch.service

say() { printf '# %s\n' "$*" >&2; }
# now: seconds since the epoch; left: seconds until the run's deadline.
now() { date +%s; }
left() { echo $((DEADLINE - $(now))); }
# cap SECONDS: SECONDS, or what is left of the run if that is less (at least 1:
# `timeout 0` would mean no limit at all).
cap() {
    local l
    l=$(left)
    [ "$l" -lt "$1" ] || l=$1
    [ "$l" -ge 1 ] || l=1
    echo "$l"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# until_t SECONDS CMD...: run CMD every 0.3 s until it succeeds; 1 if it never did.
until_t() {
    local end=$(($(now) + $1))
    shift
    while :; do
        "$@" && return 0
        [ "$(now)" -ge "$end" ] && return 1
        sleep 0.3
    done
}

# Check lines, also appended to $RESULTS for the summary.
ok() { printf 'ok   %-15s %s\n' "$1" "$2" | tee -a "$RESULTS"; }
fail() { printf 'FAIL %-15s %s\n' "$1" "$2" | tee -a "$RESULTS"; }
# check NAME FUNC [ARGS...]: FUNC sets D (the detail) and returns 0 if the check passed.
check() {
    local name=$1
    shift
    D=
    if [ -n "${LEADER:-}" ] && [ ! -d "/proc/$LEADER" ]; then
        fail "$name" "not run: the container is gone"
        return 1
    fi
    if "$@"; then ok "$name" "$D"; else fail "$name" "${D:-failed}"; return 1; fi
}

# --- The machine ------------------------------------------------------------------
cannot() {
    printf 'test-systemd: cannot run here: %s\n' "$*"
    exit 77
}

# The cgroup2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid
# host) and our own cgroup in it.
find_cgroup2() {
    CGROOT=$(findmnt -rn -t cgroup2 -o TARGET 2>/dev/null | head -1)
    OWN=$(sed -n 's/^0:://p' /proc/self/cgroup)
    [ -n "$CGROOT" ] && [ -n "$OWN" ]
}

# have CMD: CMD is an executable in PATH (bash's `command -v` also names a
# file that is not executable when it finds no other).
have() {
    local path
    path=$(command -v "$1") && [ -f "$path" ] && [ -x "$path" ]
}

install_host_packages() {
    local need=() t
    have systemd-nspawn || need+=(systemd-container)
    [ -x /lib/systemd/systemd ] && have systemd-id128 || need+=(systemd)
    for t in nsenter unshare findmnt; do
        have "$t" || { need+=(util-linux) && break; }
    done
    [ ${#need[@]} = 0 ] && return 0
    have apt-get || cannot "no ${need[*]}, and no apt-get to install it"
    say "apt-get install ${need[*]} (on this machine)"
    {
        timeout "$(cap 300)" apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive timeout "$(cap 600)" apt-get install -y -qq "${need[@]}"
    } >&2 || cannot "apt-get install ${need[*]} failed (its output is above)"
}

preflight() {
    [ "$(uname -s)" = Linux ] || cannot "not Linux"
    [ "$(id -u)" = 0 ] || cannot "not root (it mounts, makes a cgroup and boots a container)"
    have findmnt || install_host_packages
    find_cgroup2 || cannot "no cgroup2 hierarchy mounted"
    local probe="$CGROOT${OWN%/}/test-systemd-probe-$$"
    mkdir "$probe" 2>/dev/null || cannot "cannot create a cgroup under $CGROOT${OWN%/}"
    rmdir "$probe"
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null
    grep -qw overlay /proc/filesystems || cannot "no overlayfs in this kernel"
    install_host_packages
}

# --- The supervisor: runs the inner stage, then removes whatever it left ------------
# Our traces on the host, one a line: teardown passes when there are none.
traces() {
    [ -d "$CG" ] && echo "cgroup $CG"
    [ -e "$W" ] && echo "folder $W"
    [ -z "$NSPAWN_DIR_BEFORE" ] && [ -e /run/systemd/nspawn ] && echo "folder /run/systemd/nspawn"
    findmnt -rn -o SOURCE,TARGET | awk -v w="$W" \
        '$1 ~ /^test-systemd-/ || index($2, w) == 1 { print "mount " $2 }'
    processes_left
}
# Processes of the container's cgroup, or of the inner stage's mount namespace.
processes_left() {
    local p
    [ -d "$CG" ] && find "$CG" -name cgroup.procs -exec cat {} + | sed 's/^/process /'
    [ -n "$MNTNS" ] || return 0
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$MNTNS" ] && echo "process ${p#/proc/}"
    done
}
no_process_left() { [ -z "$(processes_left)" ]; }
cg_empty() { ! grep -qs '^populated 1' "$CG/cgroup.events"; }
# cg_kill: SIGKILL every process of the container's cgroup, and wait (10 s).
cg_kill() {
    if [ -f "$CG/cgroup.kill" ]; then
        echo 1 >"$CG/cgroup.kill"
    else # before Linux 5.14
        # shellcheck disable=SC2038  # pids, not file names
        find "$CG" -name cgroup.procs -exec cat {} + | xargs -r kill -KILL
    fi
    until_t 10 cg_empty
}

supervise() {
    CG="$CGROOT${OWN%/}/test-systemd-$$"
    mkdir "$CG" || cannot "cannot create the cgroup $CG"
    W=$(mktemp -d /tmp/test-systemd.XXXXXX)
    RESULTS=$W.results
    : >"$RESULTS"
    NSPAWN_DIR_BEFORE=$([ -e /run/systemd/nspawn ] && echo yes)
    MNTNS=
    INNER=
    STOPPED=
    trap teardown EXIT
    trap 'STOPPED=1; [ -n "$INNER" ] && kill -TERM "$INNER" 2>/dev/null' INT TERM HUP
    # timeout(1) puts itself in a process group of its own, out of reach of
    # Ctrl-C: the trap above passes the signal on.
    timeout -k 30 "$(cap "$LIMIT")" unshare --mount --propagation private -- \
        bash "$ME" --inner "$W" "$CG" "$SRC" "$RESULTS" &
    INNER=$!
    local rc=0
    while kill -0 "$INNER" 2>/dev/null; do
        wait "$INNER"
        rc=$?
    done
    INNER=
    if [ "$rc" = 124 ] || { [ "$rc" = 137 ] && [ "$(left)" -le 0 ]; }; then
        fail timeout "the run passed its limit (TEST_SYSTEMD_TIMEOUT=$LIMIT s) and was stopped"
    elif [ -n "$STOPPED" ]; then
        fail interrupted "stopped by a signal before the end"
    elif [ "$rc" != 0 ] && ! grep -q '^FAIL ' "$RESULTS"; then
        fail harness "the inner stage ended with rc=$rc"
    fi
}

teardown() {
    set +e
    trap '' INT TERM HUP
    [ -n "$INNER" ] && kill -TERM "$INNER" 2>/dev/null && wait "$INNER"
    MNTNS=$(cat "$W/mntns" 2>/dev/null)
    # A container the inner stage could not stop: kill its whole cgroup.
    if ! cg_empty; then
        say "the container is still running: killing its cgroup"
        cg_kill
    fi
    [ -d "$CG" ] && find "$CG" -depth -type d -exec rmdir {} + 2>/dev/null
    # What is left in the run's mount namespace is ours too (helpers of an
    # inner stage that was killed): end it, pid by pid.
    until_t 5 no_process_left || processes_left | awk '{ print $2 }' | xargs -r kill -KILL 2>/dev/null
    # The mounts went with the inner stage's mount namespace, once its last
    # process was gone: only then is $W a plain folder here.
    until_t 10 no_process_left
    if no_process_left; then
        [ -z "$NSPAWN_DIR_BEFORE" ] && rmdir /run/systemd/nspawn 2>/dev/null
        rm -rf --one-file-system "$W"
    fi
    local left_over passed failed
    left_over=$(traces | paste -sd, - | sed 's/,/, /g')
    if [ -z "$left_over" ]; then
        ok teardown "nothing left: the cgroup, the run's mount namespace (${MNTNS:-never made}) and every process in them gone, $W removed, no mount"
    else
        fail teardown "left behind: $left_over"
    fi
    passed=$(grep -c '^ok ' "$RESULTS")
    failed=$(grep -c '^FAIL ' "$RESULTS")
    rm -f "$RESULTS"
    echo "test-systemd: $passed passed, $failed failed"
    [ "$failed" = 0 ] && [ "$passed" -gt 1 ]
    exit $?
}

# --- The inner stage, in a private mount namespace ----------------------------------
inner() {
    W=$1 CG=$2 SRC=$3 RESULTS=$4
    ROOT=$W/root
    MACHINE=test-systemd-$$
    LEADER=
    NSPAWN=
    readlink /proc/self/ns/mnt >"$W/mntns"
    trap inner_teardown EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT HUP

    make_overlay || return 1
    prepare_root || return 1
    install_service
    mask_host_units
    boot || return 1
    # shellcheck source=tests/systemd/checks.sh
    . "$HERE/checks.sh"
    run_checks
}

make_overlay() {
    mkdir "$W/t" "$ROOT" &&
        mount -t tmpfs -o mode=0755,size=4G test-systemd-upper "$W/t" &&
        mkdir "$W/t/upper" "$W/t/work" &&
        mount -t overlay test-systemd-root \
            -o "lowerdir=/,upperdir=$W/t/upper,workdir=$W/t/work" "$ROOT" ||
        { fail boot "cannot mount an overlay of / on $ROOT"; return 1; }
    # nspawn keeps its state in /run/systemd/nspawn and refuses to clean it up on
    # a /run that is not a tmpfs: a private one (the supervisor removes the folder).
    mkdir -p /run/systemd/nspawn &&
        mount -t tmpfs -o mode=0755 test-systemd-nspawn /run/systemd/nspawn ||
        { fail boot "cannot mount a tmpfs on /run/systemd/nspawn"; return 1; }
}

# The copy of the checkout (what git would commit: tracked and untracked files,
# not ignored ones), the test server and its images, a fresh machine id.
prepare_root() {
    local dest=$ROOT/usr/local/src/imgdl-watch www=$ROOT/srv/test-systemd/www i
    mkdir -p "$dest" "$www"
    if git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$SRC" ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do [ -e "$SRC/$f" ] && printf '%s\0' "$f"; done |
            tar -C "$SRC" --null -T - -cf -
    else
        tar -C "$SRC" --exclude=.git --exclude=.venv --exclude=build --exclude='*.egg-info' \
            --exclude=__pycache__ --exclude='.*_cache' --exclude=./benchmarks/_work \
            --exclude=./inbox --exclude=./downloads -cf - .
    fi | tar -C "$dest" -xf - || { fail install "cannot copy $SRC into the overlay"; return 1; }
    cp "$HERE/testserver.py" "$HERE/prepare.sh" "$ROOT/srv/test-systemd/"
    for i in 1 2 3 4 5; do # JPEG markers around random bytes, 2 to 6 KB
        {
            printf '\377\330\377\340\000\020JFIF\000'
            head -c $((1000 + i * 997)) /dev/urandom
            printf '\377\331'
        } >"$www/img$i.jpg"
    done
    systemd-id128 new >"$ROOT/etc/machine-id"
    : >"$ROOT/etc/fstab"
}

# nspawn SECONDS ARGS...: systemd-nspawn on the overlay, in our cgroup, for
# SECONDS at most. In a subshell: it moves the subshell into the cgroup.
nspawn() {
    local limit=$1
    shift
    echo "$BASHPID" >"$CG/cgroup.procs" || return 1
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 exec timeout "$limit" systemd-nspawn -D "$ROOT" \
        --machine="$MACHINE" --register=no --keep-unit --link-journal=no --quiet "$@"
}

install_service() {
    local setenv=() v t0=$SECONDS
    while IFS= read -r v; do setenv+=("--setenv=$v"); done < <(
        env | grep -E '^(PIP_[A-Z_]+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)=')
    say "prepare.sh: tools and make install-service, from a copy of $SRC"
    (nspawn "$(cap 600)" --pipe "${setenv[@]}" \
        /bin/sh /srv/test-systemd/prepare.sh /usr/local/src/imgdl-watch) \
        >"$W/install.log" 2>&1 </dev/null
    INSTALL_RC=$?
    INSTALL_S=$((SECONDS - t0))
}

# The host's enabled units (nginx, databases, apt timers...) and what the
# install enabled (logrotate.timer) stay off in the container.
mask_host_units() {
    local f
    for f in "$ROOT"/etc/systemd/system/*.wants/*; do
        case $f in
        *.service | *.timer | *.socket | *.path) ln -sfn /dev/null "$ROOT/etc/systemd/system/${f##*/}" ;;
        esac
    done
}

# The container's PID 1: a process of our cgroup whose innermost pid is 1.
find_leader() {
    local p
    while read -r p; do
        if awk '/^NSpid:/ { exit !(NF > 2 && $NF == 1) }' "/proc/$p/status" 2>/dev/null; then
            LEADER=$p
            return 0
        fi
    done < <(find "$CG" -name cgroup.procs -exec cat {} + 2>/dev/null)
    return 1
}

boot() {
    say "booting systemd in the container"
    # shellcheck disable=SC2086  # the options: words on purpose
    (nspawn "$(cap "$LIMIT")" --private-network ${TEST_SYSTEMD_NSPAWN_ARGS---system-call-filter=bpf} \
        --console=read-only --boot) >"$W/boot.log" 2>&1 </dev/null &
    NSPAWN=$!
    if ! until_t 30 find_leader; then
        tail -20 "$W/boot.log" >&2
        fail boot "no container PID 1 after 30 s (the boot log is above)"
        return 1
    fi
    # systemctl can talk to PID 1 once its private socket is there.
    until_t 30 X test -S /run/systemd/private
}

# X CMD...: run CMD in the booted container (all its namespaces), in a clean
# environment, for XT seconds at most (60).
X() {
    timeout "${XT:-60}" nsenter -t "$LEADER" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 TERM=dumb SYSTEMD_COLORS=0 SYSTEMD_PAGER= SYSTEMD_URLIFY=0 "$@"
}

inner_teardown() {
    set +e
    trap '' INT TERM HUP
    local keep=${TEST_SYSTEMD_KEEP:-}
    if [ -n "$keep" ]; then
        mkdir -p "$keep" && cp "$W"/*.log "$keep"/ 2>/dev/null
        [ -n "$LEADER" ] && X journalctl -b -o short-monotonic --no-pager >"$keep/journal.txt" 2>&1
        say "logs kept in $keep"
    fi
    if [ -n "$LEADER" ] && [ -d "/proc/$LEADER" ]; then
        say "powering the container off"
        XT=10 X systemctl poweroff --no-block >/dev/null 2>&1
        until_t 30 cg_empty || say "the container did not power off in 30 s"
    fi
    cg_empty || cg_kill
    [ -n "$NSPAWN" ] && wait "$NSPAWN" 2>/dev/null
    local m
    for m in /run/systemd/nspawn "$ROOT" "$W/t"; do
        mountpoint -q "$m" && { umount "$m" || umount -l "$m"; }
    done
    say "container stopped, overlay unmounted"
}

# --- main -----------------------------------------------------------------------
if [ "${1:-}" = --inner ]; then
    shift
    inner "$@"
    exit $?
fi
PREFLIGHT=
[ "${1:-}" = --preflight ] && PREFLIGHT=1 && shift
SRC=$(readlink -f "${1:-$HERE/../..}")
if [ ! -f "$SRC/systemd/imgdl-watch.service" ] || [ ! -f "$SRC/Makefile" ]; then
    echo "test-systemd: $SRC is not an imgdl-watch checkout" >&2
    exit 2
fi
LIMIT=${TEST_SYSTEMD_TIMEOUT:-900}
DEADLINE=$(($(now) + LIMIT))
export DEADLINE LIMIT
preflight
[ -n "$PREFLIGHT" ] && exit 0
supervise
