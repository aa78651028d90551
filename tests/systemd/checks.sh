# shellcheck shell=bash
# The checks of make test-systemd, sourced by run.sh once the container is
# booted. Each c_* function sets D, the detail of its line, and returns 0 when
# the check passed. X runs a command in the container; $ROOT is the container's
# root seen from here (the same overlay).

STATE=/var/lib/imgdl-watch
INBOX=$STATE/inbox
DL=$STATE/downloads
CONF=/etc/imgdl-watch/config.toml
LOG_FILE=/var/log/imgdl-watch/imgdl-watch.log
WWW=/srv/test-systemd/www     # the test server's files, in the container
URL=http://127.0.0.1:8765     # ... on the container's own lo
LINK_LOCAL=169.254.7.7        # a link-local address, also on that lo
MAX_EXPOSURE=${TEST_SYSTEMD_MAX_EXPOSURE:-1.5}

# --- Helpers ---------------------------------------------------------------------
prop() { X systemctl show -p "$1" --value "${2:-$UNIT}"; }
running() { [ "$(prop ActiveState)/$(prop SubState)" = active/running ]; }
state() { echo "$(prop ActiveState)/$(prop SubState)"; }
# The daemon's own journal lines: all of them, or those of its current run.
journal_all() { X journalctl "_SYSTEMD_UNIT=$UNIT" -o cat --no-pager; }
journal_run() { X journalctl "_SYSTEMD_INVOCATION_ID=${1:-$(prop InvocationID)}" -o cat --no-pager; }
run_has() { journal_run | grep -qF -- "$1"; }
# as_alice UMASK CMD: a shell command as alice (in the imgdl-watch group, not root).
as_alice() { X runuser -u alice -- sh -c "umask $1 && $2"; }
# drop NAME UMASK URL...: alice writes a list under a hidden name, then renames it in.
drop() {
    local name=$1 um=$2
    shift 2
    printf '%s\n' "$@" | as_alice "$um" "cat > $INBOX/.$name.txt && mv $INBOX/.$name.txt $INBOX/$name.txt"
}
report() { X cat "$INBOX/done/$1.report.jsonl"; }
reported() { X test -f "$INBOX/done/$1.report.jsonl"; }
# requested N TEXT: the test server got N requests whose path holds TEXT.
requested() { [ "$(grep -cF -- "$2" "$ROOT$WWW/.requests" 2>/dev/null)" -ge "$1" ]; }
# identical JOB FILE...: how many of the downloaded FILEs alice reads byte for byte.
identical() {
    local job=$1 f n=0
    shift
    for f in "$@"; do
        [ "$(sha256sum <"$ROOT$WWW/$f")" = "$(as_alice 077 "cat $DL/$job/$f" | sha256sum)" ] && n=$((n + 1))
    done
    echo "$n"
}
conf_value() { sed -n "s/^$1 *= *//p" "$ROOT$CONF" | tr -d '"'; }
seconds() { # a systemd time span (30s, 1min 30s, 500ms) in seconds
    awk '{ s = 0; for (i = 1; i <= NF; i++) { v = $i + 0
           if ($i ~ /ms$/) s += v / 1000; else if ($i ~ /min$/) s += v * 60; else s += v }
           printf "%g\n", s }' <<<"$1"
}

# --- The container and the install ---------------------------------------------------
c_boot() {
    local comm st
    comm=$(X cat /proc/1/comm)
    st=$(XT=120 X systemctl is-system-running --wait)
    D="container PID 1 is $comm ($(X systemctl --version | head -1)), system '$st'"
    [ "$st" = running ] ||
        D="$D, failed units: $(X systemctl --failed --no-legend --plain | awk '{printf "%s ", $1}')"
    [ "$comm" = systemd ] && [ "$st" = running ]
}

c_install() {
    local ver inbox tools t
    ver=$(X /opt/imgdl-watch/bin/imgdl-watch --version 2>&1)
    inbox=$(X stat -c %a:%U:%G "$INBOX")
    for t in logrotate jq; do X sh -c "command -v $t" >/dev/null && tools="${tools:-}$t "; done
    D="make install-service rc=$INSTALL_RC in ${INSTALL_S}s: '$ver', $(X id imgdl-watch), inbox $inbox; alice: $(X id -nG alice); tools in the overlay: ${tools:-none}"
    if [ "$INSTALL_RC" != 0 ]; then
        D="$D; install log: $(tail -4 "$W/install.log" | tr '\n' ' ')"
        return 1
    fi
    [ "$inbox" = 2770:imgdl-watch:imgdl-watch ] && X id -nG alice | grep -qw imgdl-watch
}

c_verify() {
    local out rc
    out=$(X systemd-analyze verify "$UNIT" 2>&1)
    rc=$?
    D="systemd-analyze verify $UNIT (installed): rc=$rc, ${out:-no warning}"
    [ $rc = 0 ] && [ -z "$out" ]
}

c_server() {
    local probe="import socket; socket.create_connection(('127.0.0.1', 8765), timeout=1)"
    X systemd-run -q --unit=test-http /usr/bin/python3 /srv/test-systemd/testserver.py "$WWW" 8765
    until_t 10 X /usr/bin/python3 -c "$probe" 2>/dev/null || { D="not listening after 10 s"; return 1; }
    D="testserver.py on 0.0.0.0:8765, in the container's own network namespace: $(X ip -o link show | awk '{printf "%s ", $2}')"
}

# --- Start, sandbox, the shipped config ---------------------------------------------------
c_start() {
    local t0 rc el type txt line up
    type=$(prop Type)
    t0=$(now_ms)
    X systemctl start "$UNIT"
    rc=$?
    el=$(($(now_ms) - t0))
    txt=$(prop StatusText)
    line=$(X systemctl status "$UNIT" --no-pager -n0 | grep -E '^ *Status:' | sed 's/^ *//')
    up=$((($(prop ActiveEnterTimestampMonotonic) - $(prop ExecMainStartTimestampMonotonic)) / 1000))
    D="Type=$type: systemctl start rc=$rc after $el ms, $(state), READY=1 $up ms after exec; STATUS= '$txt'; systemctl status: ${line:-no Status: line}"
    [ $rc = 0 ] && [ "$type" = notify ] && running && [ -n "$txt" ] && [ -n "$line" ]
}

c_sandbox() {
    local p st user nnp sec eff prm bnd root state logs home map
    p=$(prop MainPID)
    st=$(X cat "/proc/$p/status")
    field() { awk -v f="$1:" '$1 == f { print $2 }' <<<"$st"; }
    user=$(X id -nu "$(field Uid)")
    nnp=$(field NoNewPrivs) sec=$(field Seccomp)
    eff=$(field CapEff) prm=$(field CapPrm) bnd=$(field CapBnd)
    opt() { X findmnt -N "$p" -no OPTIONS "$1" | cut -d, -f1; }
    root=$(opt /) state=$(opt $STATE) logs=$(opt /var/log/imgdl-watch) home=$(opt /home)
    map=$(X cat "/proc/$p/uid_map" | awk '{printf "%s:%s:%s ", $1, $2, $3}')
    D="pid $p: user $user, NoNewPrivs=$nnp, Seccomp=$sec (filter), CapEff=$eff CapPrm=$prm CapBnd=$bnd; mounts: / $root, $STATE $state, /var/log/imgdl-watch $logs, /home $home; uid_map ${map% }"
    [ "$user" = imgdl-watch ] && [ "$nnp" = 1 ] && [ "$sec" = 2 ] &&
        [ "$eff$prm$bnd" = 000000000000000000000000000000000000000000000000 ] &&
        [ "$root" = ro ] && [ "$state" = rw ] && [ "$logs" = rw ] && [ "$home" = ro ]
}

worker_of() { # the pid of a download worker child of $1, if any
    local c
    # Children are listed by the thread that started them: trio starts a
    # process from a thread of its own. A worker names itself imgdl-worker
    # (forked at start-up, its command line is the daemon's own); one
    # started as a program also says so in its command line.
    for c in $(X sh -c "cat /proc/$1/task/*/children"); do
        if [ "$(X cat "/proc/$c/comm" 2>/dev/null)" = imgdl-worker ] ||
            X cat "/proc/$c/cmdline" 2>/dev/null | tr '\0' ' ' | grep -qF imgdl_watch.download.worker; then
            echo "$c"
            return
        fi
    done
}

c_worker() {
    # The download worker (`--workers auto`: one on two cores, none on one)
    # runs under the unit's own sandbox, and a killed one is replaced.
    local p w w2 st cores i
    cores=$(X nproc)
    p=$(prop MainPID)
    w=$(worker_of "$p")
    if [ "$cores" -lt 2 ]; then
        D="$cores core: no worker expected, found '${w:-none}'"
        [ -z "$w" ]
        return
    fi
    [ -n "$w" ] || { D="no worker process under the main pid $p ($cores cores)"; return 1; }
    st=$(X cat "/proc/$w/status")
    D="worker pid $w (main $p): $(awk '$1 == "Uid:" { print "uid " $2 } $1 == "NoNewPrivs:" { print "NoNewPrivs=" $2 } $1 == "Seccomp:" { print "Seccomp=" $2 }' <<<"$st" | paste -sd, -)"
    if journal_run | grep -qE '"event": ?"(worker_not_started|workers_unavailable)"'; then
        D="$D; the journal says a worker did not start"
        return 1
    fi
    X kill -KILL "$w"
    for i in $(seq 1 50); do
        w2=$(worker_of "$p")
        [ -n "$w2" ] && [ "$w2" != "$w" ] && run_has worker_lost && break
        sleep 0.2
    done
    D="$D; killed, replaced by pid ${w2:-none}, worker_lost logged: $(run_has worker_lost && echo yes || echo no), $(state)"
    [ -n "$w2" ] && [ "$w2" != "$w" ] && run_has worker_lost && running &&
        grep -q "NoNewPrivs:[[:space:]]*1" <<<"$st" && grep -q "Seccomp:[[:space:]]*2" <<<"$st"
}

c_block_private() {
    drop shipped 002 "$URL/img1.jpg"
    until_t 20 reported shipped || { D="no report in 20 s"; return 1; }
    D="the shipped config (block_private = $(conf_value block_private)) refuses $URL: $(report shipped)"
    report shipped | grep -q '"reason":"blocked_address"'
}

# From here on, a drop-in lets the daemon reach the test server on loopback.
c_dropin() {
    local d=/etc/systemd/system/$UNIT.d
    X mkdir -p "$d" &&
        printf '[Service]\nEnvironment=IMGDL_WATCH_BLOCK_PRIVATE=false IMGDL_WATCH_RETRIES=0 IMGDL_WATCH_CONNECT_TIMEOUT=2\n' |
        X tee "$d/50-test-systemd.conf" >/dev/null &&
        X systemctl daemon-reload && X systemctl restart "$UNIT"
    D="$d/50-test-systemd.conf: block_private off, no retries, connect timeout 2 s; restarted: $(state)"
    running
}

# --- What a group member does -----------------------------------------------------------
c_drop() { # c_drop UMASK NAME FILE...
    local um=$1 job=$2 n mode
    shift 2
    local urls=("${@/#/$URL/}")
    drop "$job" "$um" "${urls[@]}"
    until_t 20 reported "$job" || { D="no report in 20 s; $(journal_run | tail -2 | tr '\n' ' ')"; return 1; }
    n=$(identical "$job" "$@")
    mode=$(X stat -c '%A %U:%G' "$INBOX/done/$job.txt")
    D="alice's list (umask $um: $mode) of $# URLs: $n byte-identical images that alice reads ($(X stat -c '%A %U:%G' "$DL/$job/$1")); list in done/"
    [ "$n" = $# ]
}

c_drop002() { c_drop 002 cats img1.jpg img2.jpg img3.jpg img4.jpg img5.jpg; }

# umask 022: the list is alice's and 0644. Under fs.protected_hardlinks=1 the
# service user may not link() it into processing/: show that, then that the
# daemon takes the list all the same.
c_drop022() {
    local probe=$INBOX/.link-probe hard link
    hard=$(cat /proc/sys/fs/protected_hardlinks)
    as_alice 022 "echo probe > $probe"
    link=$(X setpriv --reuid=imgdl-watch --regid=imgdl-watch --init-groups /usr/bin/python3 -c \
        "import os; os.link('$probe', '$STATE/.link-probe')" 2>&1 | tail -1)
    X rm -f "$probe" "$STATE/.link-probe"
    c_drop 022 u22 img3.jpg img5.jpg || return 1
    D="$D; fs.protected_hardlinks=$hard, link() of such a file by imgdl-watch: ${link:-allowed}"
    [ "$hard" != 1 ] || grep -q 'Operation not permitted' <<<"$link"
}

c_watchdog_ping() {
    local t0 s=$SECONDS
    t0=$(prop WatchdogTimestampMonotonic)
    moved() { [ "$(prop WatchdogTimestampMonotonic)" != "$t0" ]; }
    if until_t 20 moved; then
        D="WatchdogUSec=$(prop WatchdogUSec): a WATCHDOG=1 ping came within $((SECONDS - s)) s; NRestarts=$(prop NRestarts)"
    else
        D="WatchdogUSec=$(prop WatchdogUSec): no WATCHDOG=1 ping in 20 s"
        return 1
    fi
    [ "$(prop NRestarts)" = 0 ]
}

# --- Reload, log rotation -------------------------------------------------------------------
c_reload() {
    local p0 rc old
    p0=$(prop MainPID)
    old=$(conf_value concurrency)
    X sed -i 's/^concurrency = .*/concurrency = 16/' "$CONF"
    X systemctl reload "$UNIT"
    rc=$?
    if ! until_t 10 run_has '"event":"config_reloaded","concurrency":16'; then
        D="systemctl reload rc=$rc: no config_reloaded with concurrency 16 in 10 s; $(journal_run | tail -2 | tr '\n' ' ')"
        return 1
    fi
    D="concurrency $old -> 16 in $CONF, systemctl reload rc=$rc: $(journal_run | grep -o '"event":"config_reloaded"[^}]*' | tail -1); $(state), MainPID $p0 -> $(prop MainPID)"
    [ $rc = 0 ] && running && [ "$(prop MainPID)" = "$p0" ]
}

# log_file on, then logrotate as its timer runs it (logrotate.service, with
# Debian's /etc/logrotate.conf), the file's last rotation set to long ago.
c_logrotate() {
    local status=/var/lib/logrotate/status how before res
    X sed -i 's|^# *log_file = |log_file = |' "$CONF"
    X systemctl restart "$UNIT"
    until_t 10 X test -s "$LOG_FILE" || { D="no $LOG_FILE after a restart with log_file set"; return 1; }
    X sh -c 'command -v logrotate' >/dev/null || { D="logrotate is not installed in the overlay"; return 1; }
    X sh -c "mkdir -p ${status%/*} && { test -s $status || echo 'logrotate state -- version 2' > $status; } &&
        echo '\"$LOG_FILE\" 2000-1-1-0:0:0' >> $status"
    before=$(X stat -c '%a %U:%G' "$LOG_FILE")
    if X systemctl cat logrotate.service >/dev/null 2>&1; then
        how="systemctl start logrotate.service"
        X systemctl start logrotate.service
        res=$(prop Result logrotate.service)
    else
        how="logrotate /etc/logrotate.conf"
        X logrotate /etc/logrotate.conf && res=success || res=failed
    fi
    if ! X test -s "$LOG_FILE.1"; then
        D="$how ($res) did not rotate $LOG_FILE: $(X ls -l /var/log/imgdl-watch | tail -n +2 | tr '\n' ' ')"
        return 1
    fi
    if ! until_t 10 X grep -q '"event":"config_reloaded"' "$LOG_FILE"; then
        D="$how ($res) rotated to $LOG_FILE.1, but the daemon wrote nothing to the new file in 10 s"
        return 1
    fi
    D="$how: $res; $LOG_FILE ($before) rotated to .1, the postrotate SIGHUP made the daemon reopen a new one ($(X stat -c '%a %U:%G' "$LOG_FILE")): $(X head -c 90 "$LOG_FILE")…"
    [ "$res" = success ] && running
}

# --- Stopping with downloads in flight ---------------------------------------------------------
c_stop_inflight() {
    local grace t0 rc el busy="" res n
    grace=$(conf_value grace)
    : >"$ROOT$WWW/.requests"
    drop slow 002 "$URL/delay/6/img1.jpg" "$URL/delay/6/img2.jpg"
    until_t 15 requested 2 /delay/6/ || { D="the 2 downloads did not start in 15 s"; return 1; }
    # STATUS= is sent once a second: wait for it to show them.
    busy() { busy=$(prop StatusText) && grep -q ' 2 in flight' <<<"$busy"; }
    until_t 4 busy
    t0=$(now_ms)
    X systemctl stop "$UNIT"
    rc=$?
    el=$(($(now_ms) - t0))
    res=$(prop Result)
    n=$(report slow 2>/dev/null | grep -c '"outcome":"ok"')
    D="2 downloads of 6 s in flight (STATUS= '$busy'): systemctl stop rc=$rc in $el ms (grace ${grace}s), Result=$res; $n/2 finished, $(identical slow img1.jpg img2.jpg)/2 byte-identical; list in done/"
    [ $rc = 0 ] && [ "$res" = success ] && [ "$el" -lt "${grace%.*}000" ] && [ "$n" = 2 ] &&
        [ "$(identical slow img1.jpg img2.jpg)" = 2 ] && X test -f "$INBOX/done/slow.txt" &&
        grep -q ' 2 in flight' <<<"$busy"
}

# A download that outlasts --grace: cancelled at stop, its list kept in
# processing/ (and no temporary file left), resumed and finished by the next start.
c_stop_grace() {
    local grace stop_s t0 rc el res kept temps run events resumed
    grace=$(conf_value grace)
    stop_s=$(seconds "$(prop TimeoutStopUSec)")
    rm -f "$ROOT$WWW/.release"
    : >"$ROOT$WWW/.requests"
    X systemctl start "$UNIT"
    drop held 002 "$URL/hold/img4.jpg"
    until_t 15 requested 1 /hold/img4.jpg || { D="the download did not start in 15 s"; return 1; }
    run=$(prop InvocationID)
    t0=$(now_ms)
    XT=$((${stop_s%.*} + 15)) X systemctl stop "$UNIT"
    rc=$?
    el=$(($(now_ms) - t0))
    res=$(prop Result)
    kept=$(X ls "$INBOX/processing")
    temps=$(X find "$DL/held" -name '.imgdl-tmp-*' 2>/dev/null | wc -l)
    events=$(journal_run "$run" | sed -n '/"daemon_stopping"/,$p' | grep -o '"event":"[a-z_]*"' |
        cut -d'"' -f4 | uniq | paste -sd' ' -)
    touch "$ROOT$WWW/.release"
    X systemctl start "$UNIT"
    until_t 20 reported held
    resumed=$(journal_run | grep -o '"event":"job_resumed","job":"held"')
    D="a held download: systemctl stop rc=$rc in $el ms (grace ${grace}s, TimeoutStopSec=${stop_s}s), Result=$res; logged from daemon_stopping on: $events; processing/: '$kept', $temps temporary files; next start: ${resumed:-no job_resumed}, $(report held 2>/dev/null | grep -c '"outcome":"ok"')/1 ok, $(identical held img4.jpg)/1 byte-identical"
    [ $rc = 0 ] && [ "$res" = success ] && [ "$el" -ge $((${grace%.*} * 1000 - 500)) ] &&
        [ "$el" -lt "${stop_s%.*}000" ] && [ "$kept" = held.txt ] && [ "$temps" = 0 ] &&
        [ -n "$resumed" ] && [ "$(identical held img4.jpg)" = 1 ]
}

# --- The watchdog ------------------------------------------------------------------------------
# SIGSTOP the main process: no more pings, and after WatchdogSec systemd kills
# it (SIGABRT) and Restart=on-failure starts it again.
c_watchdog() {
    local wd n0 p0 t0 line
    running || X systemctl start "$UNIT"
    wd=$(seconds "$(prop WatchdogUSec)")
    n0=$(prop NRestarts) p0=$(prop MainPID)
    X kill -STOP "$p0"
    t0=$SECONDS
    restarted() { [ "$(prop NRestarts)" -gt "$n0" ] && running && [ "$(prop MainPID)" != "$p0" ]; }
    if ! until_t $((${wd%.*} + 45)) restarted; then
        X kill -CONT "$p0"
        D="kill -STOP $p0: no restart in $((${wd%.*} + 45)) s (NRestarts=$(prop NRestarts), $(state))"
        return 1
    fi
    line=$(X journalctl -u "$UNIT" -o cat --no-pager -n 40 | grep -m1 'Watchdog timeout')
    D="kill -STOP $p0: '$line', running again $((SECONDS - t0)) s after the stop (RestartSec=$(prop RestartUSec)), NRestarts $n0 -> $(prop NRestarts), MainPID $(prop MainPID), $(state)"
    [ -n "$line" ]
}

# --- The network firewall ---------------------------------------------------------------------
PROBE="import socket; socket.create_connection(('127.0.0.1', 8765), timeout=2); print('connected')"
# Is cgroup BPF (what IPAddressDeny= uses) enforced in this container at all?
c_bpf() {
    local without with
    without=$(X systemd-run --wait --pipe -q /usr/bin/python3 -c "$PROBE" 2>&1 | tail -1)
    with=$(X systemd-run --wait --pipe -q -p IPAddressDeny=127.0.0.0/8 /usr/bin/python3 -c "$PROBE" 2>&1 | tail -1)
    D="a transient unit reaching $URL: '$without'; with IPAddressDeny=127.0.0.0/8: '${with:0:60}'"
    [ "$without" = connected ] && [ "$with" != connected ] ||
        { D="$D: NOT enforced (nspawn options '${TEST_SYSTEMD_NSPAWN_ARGS---system-call-filter=bpf}': without bpf() systemd runs units without their IP firewall)"; return 1; }
}

c_ipaddressdeny() {
    local rootgot r
    X ip addr add "$LINK_LOCAL/32" dev lo 2>/dev/null
    rootgot=$(X /usr/bin/python3 -c "import urllib.request as u; print(len(u.urlopen('http://$LINK_LOCAL:8765/img1.jpg', timeout=3).read()))" 2>&1 | tail -1)
    drop ll 002 "http://$LINK_LOCAL:8765/img1.jpg" "$URL/img2.jpg"
    until_t 20 reported ll || { D="no report in 20 s"; return 1; }
    r=$(report ll)
    D="IPAddressDeny=$(prop IPAddressDeny); root outside the unit fetches http://$LINK_LOCAL:8765/img1.jpg: $rootgot bytes; the daemon: $(grep -o '"outcome":"[a-z]*","line":[0-9]*,"url":"[^"]*"\(,"reason":"[a-z_]*"\)\?' <<<"$r" | paste -sd' ' -)"
    [ "$rootgot" = "$(stat -c %s "$ROOT$WWW/img1.jpg")" ] &&
        grep -q "\"outcome\":\"failed\".*$LINK_LOCAL" <<<"$r" && grep -q '"outcome":"ok".*127\.0\.0\.1' <<<"$r"
}

c_security() {
    local out score bad
    out=$(X systemd-analyze security "$UNIT" --no-pager 2>&1)
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
    bad=$(grep '^✗' <<<"$out" | awk '{printf "%s ", $2}')
    D="systemd-analyze security $UNIT (running): exposure ${score:-?}, passes at <= $MAX_EXPOSURE; not set: $bad"
    [ -n "$score" ] && awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'
}

c_stop() {
    local run t0 rc el last
    run=$(prop InvocationID)
    t0=$(now_ms)
    X systemctl stop "$UNIT"
    rc=$?
    el=$(($(now_ms) - t0))
    last=$(journal_run "$run" | tail -1)
    D="systemctl stop rc=$rc in $el ms, $(prop ActiveState), Result=$(prop Result), ExecMainStatus=$(prop ExecMainStatus); last line: $last"
    [ $rc = 0 ] && [ "$(prop ActiveState)" = inactive ] && [ "$(prop Result)" = success ] &&
        grep -q '"event":"daemon_stopped"' <<<"$last"
}

# --- The journal -------------------------------------------------------------------------------
# Every line the daemon's processes wrote, over all the runs above, is one JSON
# object with an "event".
c_journal_json() {
    local out
    out=$(X journalctl "_SYSTEMD_UNIT=$UNIT" -o json --no-pager | /usr/bin/python3 -c '
import json, sys
lines = bad = 0
runs, events, sample = set(), set(), ""
for entry in map(json.loads, sys.stdin):
    lines += 1
    runs.add(entry.get("_SYSTEMD_INVOCATION_ID"))
    message = entry.get("MESSAGE")
    try:
        doc = json.loads(message if isinstance(message, str) else bytes(message or []).decode())
        ok = isinstance(doc, dict) and isinstance(doc.get("event"), str)
    except (ValueError, UnicodeDecodeError):
        ok = False
    if ok:
        events.add(doc["event"])
    else:
        bad += 1
        sample = sample or repr(message)[:80]
print(lines, bad, len(runs), " ".join(sorted(events)), sample)')
    read -r n bad runs rest <<<"$out"
    D="$n lines of the daemon in the journal over $runs runs, ${bad:-?} not a JSON object with an event; events: $rest"
    [ "${n:-0}" -gt 0 ] && [ "$bad" = 0 ]
}

# The README's command, without -f: as root; as alice, in the imgdl-watch group
# only (the README says that is not enough); then as alice in systemd-journal.
c_readme_journal() {
    local cmd root rc mine member
    cmd=$(grep -m1 -E '^ *(sudo +)?journalctl .*\| *jq' "$SRC/README.md" |
        sed -e 's/^ *//' -e 's/^sudo  *//' -e 's/ -f / /' -e 's/ -f$//')
    [ -n "$cmd" ] || { D="no 'journalctl ... | jq' line in $SRC/README.md"; return 1; }
    root=$(X sh -c "$cmd" 2>&1)
    rc=$?
    mine=$(X runuser -u alice -- sh -c "$cmd" 2>/dev/null | grep -c '^{')
    X usermod -aG systemd-journal alice
    member=$(X runuser -u alice -- sh -c "$cmd" 2>/dev/null | grep -c '^{')
    D="README's '$cmd' (no -f): as root rc=$rc, $(grep -c '^{' <<<"$root") JSON lines; as alice in imgdl-watch only: $mine; in systemd-journal too: $member"
    [ $rc = 0 ] || D="$D; $(grep -v '^{' <<<"$root" | head -2 | tr '\n' ' ')"
    [ $rc = 0 ] && [ "$member" -gt 0 ] && [ "$member" = "$(grep -c '^{' <<<"$root")" ]
}

run_checks() {
    check boot c_boot || return 1
    check install c_install || return 1
    check verify c_verify
    check test-server c_server || return 1
    check start c_start || return 1
    check sandbox c_sandbox
    check block-private c_block_private
    check test-dropin c_dropin || return 1
    check drop-umask002 c_drop002
    check drop-umask022 c_drop022
    check download-worker c_worker
    check watchdog-ping c_watchdog_ping
    check reload c_reload
    check logrotate c_logrotate
    check stop-inflight c_stop_inflight
    check stop-grace c_stop_grace
    check watchdog c_watchdog
    check bpf-firewall c_bpf
    check ipaddressdeny c_ipaddressdeny
    check security c_security
    check stop c_stop
    check journal-json c_journal_json
    check readme-journal c_readme_journal
    if grep -q '^FAIL ' "$RESULTS"; then
        say "the unit's last journal lines:"
        X journalctl -u "$UNIT" -o short-monotonic --no-pager -n 25 >&2
    fi
    return 0
}
