"use strict";
(function () {
  // The server's settings, from the body's data- attributes.
  var config = document.body.dataset;
  var POLL_MS = Number(config.pollMs), QUEUE_SHOWN = Number(config.queueShown);
  var HOSTS_SHOWN = Number(config.hostsShown);
  var COUNTS = JSON.parse(config.counts), NOT_COUNTS = JSON.parse(config.notCounts);
  var HOST_LABELS = JSON.parse(config.hostLabels);
  function el(tag, attrs) {
    var node = document.createElement(tag), i, child;
    for (var key in attrs || {}) { node.setAttribute(key, attrs[key]); }
    for (i = 2; i < arguments.length; i++) {
      child = arguments[i];
      if (child === null || child === undefined) { continue; }
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function size(n) {
    if (n < 1000) { return Math.round(n) + " B"; }
    var units = ["KB", "MB", "GB"], i = -1;
    do { n /= 1000; i++; } while (n >= 1000 && i < units.length - 1);
    return n.toFixed(1) + " " + units[i];
  }
  function span(s) {
    if (s === null || s === undefined) { return "-"; }
    s = Math.round(s);
    if (s < 60) { return s + " s"; }
    if (s < 3600) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  // A number from the document, or 0: a field a daemon does not send must not stop the page.
  function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }
  function text(v) { return (v !== null && typeof v === "object") ? JSON.stringify(v) : String(v); }
  function table(head, rows) {
    var t = el("table", {}), tr = el("tr", {});
    head.forEach(function (h) { tr.appendChild(el("th", {}, h)); });
    t.appendChild(tr);
    rows.forEach(function (r) { t.appendChild(r); });
    return t;
  }
  function health(doc) {
    var box = el("div", {});
    box.appendChild(el("p", {}, el("span", {"class": doc.daemon_alive ? "ok" : "bad"},
      doc.daemon_alive ? "daemon running" : "no daemon is running"), " on ",
      el("span", {"class": "name"}, doc.inbox)));
    var rows = (doc.daemons || []).map(function (d) {
      return el("tr", {}, el("td", {}, d.host), el("td", {}, d.pid),
        el("td", {"class": d.alive ? "ok" : "bad"}, d.alive ? d.state : (d.state + ", not alive")),
        el("td", {}, d.started_at), el("td", {}, d.updated_at), el("td", {}, d.in_flight),
        el("td", {}, d.output_free_bytes === null || d.output_free_bytes === undefined
          ? "-" : size(d.output_free_bytes)));
    });
    if (rows.length) {
      box.appendChild(table(["host", "pid", "state", "started", "updated",
        "in flight", "free disk"], rows));
    }
    return box;
  }
  function running(doc) {
    var jobs = doc.running || [];
    if (!jobs.length) { return el("p", {"class": "muted"}, "No job is running."); }
    return table(["job", "progress", "done", "rate", "ETA"], jobs.map(function (j) {
      var finished = num(j.done) + num(j.failed), bar = el("progress", {"class": "bar"});
      if (j.total) { bar.setAttribute("max", j.total); bar.setAttribute("value", finished); }
      var pct = j.total ? " (" + Math.floor(100 * finished / j.total) + "%)" : "";
      return el("tr", {"class": "job"}, el("td", {"class": "name"}, j.job), el("td", {}, bar),
        el("td", {"class": "done"}, j.done + "/" + j.total + pct +
          (j.failed ? ", " + j.failed + " failed" : "")),
        el("td", {}, num(j.rate_img_s).toFixed(1) + " img/s, " + size(num(j.rate_bytes_s)) + "/s"),
        el("td", {}, span(j.eta_s)));
    }));
  }
  function queue(doc) {
    var names = doc.queued || [];
    if (!names.length) { return el("p", {"class": "muted"}, "No list is waiting."); }
    var list = el("ul", {});
    names.slice(0, QUEUE_SHOWN).forEach(function (n) {
      list.appendChild(el("li", {"class": "name"}, n));
    });
    if (names.length > QUEUE_SHOWN) {
      list.appendChild(el("li", {"class": "muted"},
        "and " + (names.length - QUEUE_SHOWN) + " more"));
    }
    return list;
  }
  function counts(j) {
    var keys = COUNTS.filter(function (k) { return typeof j[k] === "number"; });
    Object.keys(j).forEach(function (k) {
      if (keys.indexOf(k) < 0 && NOT_COUNTS.indexOf(k) < 0 && typeof j[k] === "number") {
        keys.push(k);
      }
    });
    return keys.map(function (k) { return j[k] + " " + k; }).join(", ");
  }
  function recent(doc) {
    var jobs = doc.recent || [];
    if (!jobs.length) { return el("p", {"class": "muted"}, "No job has finished yet."); }
    return table(["job", "finished", "counts", "size", "took", "report"], jobs.map(function (j) {
      var link = j.report ? el("a", {"href": "report/" + encodeURIComponent(j.report)}, "report")
        : el("span", {"class": "muted"}, "-");
      return el("tr", {}, el("td", {"class": "name"}, j.job), el("td", {}, j.finished_at),
        el("td", {}, counts(j)), el("td", {}, size(j.bytes || 0)), el("td", {}, span(j.elapsed_s)),
        el("td", {}, link));
    }));
  }
  function hostRows(doc) {
    var hosts = doc.hosts, rows = [];
    if (hosts === undefined || hosts === null) {
      (doc.daemons || []).forEach(function (d) {
        if (d.hosts) { hosts = (hosts || []).concat(asRows(d.hosts)); }
      });
    }
    return hosts === undefined || hosts === null ? null : asRows(hosts);
  }
  function asRows(hosts) {
    if (Array.isArray(hosts)) { return hosts.filter(function (h) { return h && typeof h === "object"; }); }
    if (typeof hosts === "object") {
      return Object.keys(hosts).map(function (name) {
        var v = hosts[name], row = {host: name};
        if (v && typeof v === "object" && !Array.isArray(v)) {
          for (var k in v) { if (k !== "host") { row[k] = v[k]; } }
        } else { row.value = v; }
        return row;
      });
    }
    return [];
  }
  function hostsSection(doc) {
    var rows = hostRows(doc);
    if (rows === null) {
      return el("p", {"class": "muted"}, "This daemon reports no per-host data.");
    }
    if (!rows.length) { return el("p", {"class": "muted"}, "No host is being throttled or paced."); }
    var keys = [];
    rows.forEach(function (r) {
      Object.keys(r).forEach(function (k) { if (keys.indexOf(k) < 0) { keys.push(k); } });
    });
    keys.sort(function (a, b) { return (b === "host") - (a === "host"); });
    var shown = rows.slice(0, HOSTS_SHOWN).map(function (r) {
      var tr = el("tr", {});
      keys.forEach(function (k) {
        tr.appendChild(el("td", {"class": k === "host" ? "name" : ""},
          r[k] === undefined ? "" : r[k] === null ? "-" : text(r[k])));
      });
      return tr;
    });
    var head = keys.map(function (k) {
      return Object.prototype.hasOwnProperty.call(HOST_LABELS, k) ? HOST_LABELS[k] : k.replace(/_/g, " ");
    });
    var box = el("div", {}, table(head, shown));
    if (rows.length > HOSTS_SHOWN) {
      box.appendChild(el("p", {"class": "muted"}, "and " + (rows.length - HOSTS_SHOWN) + " more hosts"));
    }
    return box;
  }
  var sections = {health: health, running: running, queue: queue, recent: recent, hosts: hostsSection};
  function render(doc) {
    for (var id in sections) {
      var holder = document.getElementById(id);
      holder.replaceChildren(sections[id](doc));
    }
    var stamp = document.getElementById("updated");
    stamp.textContent = "updated " + new Date().toLocaleTimeString() + " (live)";
    stamp.className = "muted small";
  }
  function poll() {
    fetch("status.json", {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    }).then(render).catch(function (e) {
      var stamp = document.getElementById("updated");
      stamp.textContent = (e instanceof TypeError && /fetch/i.test(e.message)
        ? "cannot reach the daemon's page server" : "cannot show the status") +
        " (" + e.message + "); retrying";
      stamp.className = "bad small";
    }).finally(function () { setTimeout(poll, POLL_MS); });
  }
  setTimeout(poll, POLL_MS);
})();
