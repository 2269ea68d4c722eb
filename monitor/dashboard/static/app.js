// The operator dashboard: a map of the subjects' last positions and zones, the live alert
// feed (snapshot, then every change; resumed with after=<last event id> after a drop, so
// nothing is missed or repeated), acknowledge/resolve, and a subject panel with the last
// 24 h replayed on the map. Vanilla JS, no build step; Leaflet is vendored from npm.
(function () {
  "use strict";

  const REASON = "control-centre supervision"; // X-Access-Reason of the dashboard's reads
  const OVERVIEW_EVERY_MS = 60_000; // positions are not pushed: the map re-reads them
  const STALE_AFTER_MS = 15 * 60_000; // a subject silent this long is drawn as unknown
  const KEEP_RESOLVED_MS = 10 * 60_000; // resolved rows stay (dimmed) this long, then go
  const STATUS_COLOUR = { red: "#e53935", yellow: "#fdd835", blue: "#1e88e5", green: "#43a047" };
  const NO_STATUS = "#9e9e9e";
  const LABEL_ALL_UP_TO = 40; // subjects; beyond, names show on hover (and when alerting)
  const SEVERITY_RANK = { critical: 0, serious: 1, warning: 2, info: 3 };

  const $ = (sel) => document.querySelector(sel);
  const state = {
    token: sessionStorage.getItem("token"),
    username: sessionStorage.getItem("username") || "",
    subjects: new Map(), // id -> the map's view of a subject (GET /api/v1/map/subjects)
    alerts: new Map(), // id -> alert, as last received
    rows: new Map(), // id -> <li> of the feed
    feedReady: false, // a snapshot (or a resume) has been received
    lastEvent: null, // the last alert event id seen
    ws: null,
    stopped: true,
    retries: 0,
    reconnectTimer: null,
    stableTimer: null,
    overviewTimer: null,
    overviewSoon: null,
    fitted: false,
    selected: null, // subject id of the open panel
    alertIndex: new Map(), // subject id -> its unresolved alerts in one value
    beeps: 0,
    muted: false,
  };

  // ---- small helpers -------------------------------------------------------------------

  function el(tag, attrs, ...children) { // children: nodes or strings; null/undefined skipped
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function toast(text) {
    const t = $("#toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (t.hidden = true), 6000);
  }

  function pad(n) { return String(n).padStart(2, "0"); }

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (new Date().toDateString() === d.toDateString()) return hms;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
  }

  function ago(iso) {
    if (!iso) return "";
    const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function humanKind(kind) { return String(kind || "").replace(/_/g, " "); }

  function detailText(detail) {
    if (!detail) return "";
    if (typeof detail === "string") return detail;
    if (detail.message) return String(detail.message);
    return Object.entries(detail).map(([k, v]) => `${k}: ${v}`).join(", ");
  }

  class HttpError extends Error {
    constructor(status, detail) {
      super(typeof detail === "string" ? detail : detailText(detail) || `HTTP ${status}`);
      this.status = status;
    }
  }

  function explain(detail) {
    if (Array.isArray(detail)) return detail.map((p) => `${p.where || ""}: ${p.msg}`).join("; ");
    return typeof detail === "string" ? detail : JSON.stringify(detail);
  }

  async function api(path, { method = "GET", body, reason = false } = {}) {
    const headers = { Authorization: `Bearer ${state.token}` };
    if (reason) headers["X-Access-Reason"] = REASON;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (r.status === 401) {
      logout("Your session has ended — log in again.");
      throw new HttpError(401, "session ended");
    }
    const data = await r.json().catch(() => null);
    if (!r.ok) throw new HttpError(r.status, explain(data && data.detail) || `HTTP ${r.status}`);
    return data;
  }

  // ---- sound: a short WebAudio beep on a new critical alert ------------------------------

  let audio = null;

  function unlockAudio() {
    try {
      if (!audio) audio = new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === "suspended") audio.resume().then(showSound, showSound);
    } catch (e) {
      audio = null;
    }
    showSound();
  }

  function showSound() {
    const b = $("#sound");
    let s = "on";
    if (state.muted) s = "muted";
    else if (!audio || audio.state !== "running") s = "blocked";
    b.dataset.state = s;
    b.textContent = { on: "sound on", muted: "sound muted", blocked: "sound off: click to enable" }[s];
  }

  function beep() {
    state.beeps += 1;
    document.body.dataset.beeps = String(state.beeps);
    if (state.muted || !audio) return;
    try {
      const t0 = audio.currentTime;
      for (const [i, f] of [[0, 880], [1, 1175], [2, 880]]) {
        const osc = audio.createOscillator();
        const gain = audio.createGain();
        osc.type = "square";
        osc.frequency.value = f;
        const start = t0 + i * 0.18;
        gain.gain.setValueAtTime(0.0001, start);
        gain.gain.exponentialRampToValueAtTime(0.25, start + 0.01);
        gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.15);
        osc.connect(gain).connect(audio.destination);
        osc.start(start);
        osc.stop(start + 0.16);
      }
    } catch (e) {
      /* no sound device: the visual alert stands */
    }
  }

  // ---- the map ----------------------------------------------------------------------------

  let map = null;
  const layers = { markers: new Map(), zones: new Map(), shared: null, track: null, replay: null };

  function initMap(tileUrl) {
    if (!window.L) {
      $("#map-empty").hidden = false;
      $("#map-empty").textContent =
        "Leaflet is missing: run monitor/dashboard/vendor.sh (the alert feed still works).";
      return;
    }
    map = L.map("map", { zoomControl: true, attributionControl: Boolean(tileUrl), worldCopyJump: true });
    map.setView([43.2389, 76.8897], 4);
    map.createPane("zonesPane").style.zIndex = 350;
    map.createPane("trackPane").style.zIndex = 420;
    map.createPane("markersPane").style.zIndex = 450;
    if (tileUrl) {
      L.tileLayer(tileUrl, { maxZoom: 19, attribution: "map tiles: configured tile server" }).addTo(map);
      $("#map").dataset.tiles = "on";
    } else {
      map.getContainer().classList.add("no-tiles");
      $("#map").dataset.tiles = "off";
      graticule();
    }
    L.control.scale({ position: "bottomleft", metric: true, imperial: false, maxWidth: 160 }).addTo(map);
  }

  // Without tiles, a light grid shows scale and movement on the plain background.
  function graticule() {
    const grid = L.layerGroup().addTo(map);
    const steps = [45, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002];
    function draw() {
      grid.clearLayers();
      const b = map.getBounds();
      const span = Math.max(b.getEast() - b.getWest(), b.getNorth() - b.getSouth());
      const step = steps.find((s) => span / s >= 4 && span / s <= 14) || steps[steps.length - 1];
      const style = { color: "#2a3b4c", weight: 1, interactive: false, className: "graticule", pane: "zonesPane" };
      const s = Math.max(-85, Math.floor(b.getSouth() / step) * step);
      const n = Math.min(85, b.getNorth());
      for (let lon = Math.floor(b.getWest() / step) * step; lon <= b.getEast(); lon += step) {
        grid.addLayer(L.polyline([[s, lon], [n, lon]], style));
      }
      for (let lat = s; lat <= n; lat += step) {
        grid.addLayer(L.polyline([[lat, b.getWest()], [lat, b.getEast()]], style));
      }
    }
    map.on("moveend", draw);
    draw();
  }

  function statusColour(status) { return STATUS_COLOUR[status] || NO_STATUS; }

  // Each subject's unresolved alerts in one value, rebuilt from the feed on each change.
  function indexAlerts() {
    const index = new Map();
    for (const a of state.alerts.values()) {
      if (!a.subject_id || a.state === "resolved") continue;
      let s = index.get(a.subject_id);
      if (!s) {
        s = { state: "acknowledged", severity: a.severity, open_severity: null, count: 0, unacknowledged: 0, kind: null };
        index.set(a.subject_id, s);
      }
      s.count += 1;
      if (SEVERITY_RANK[a.severity] < SEVERITY_RANK[s.severity]) s.severity = a.severity;
      if (a.state === "open") {
        s.state = "open";
        s.unacknowledged += 1;
        if (s.open_severity === null || SEVERITY_RANK[a.severity] < SEVERITY_RANK[s.open_severity]) {
          s.open_severity = a.severity;
          s.kind = a.kind;
        }
      }
    }
    state.alertIndex = index;
  }

  // From the live feed once it has arrived; until then, what the map's read said.
  function alertStateOf(subjectId) {
    if (!state.feedReady) {
      const s = state.subjects.get(subjectId);
      return s && s.alert ? s.alert : null;
    }
    return state.alertIndex.get(subjectId) || null;
  }

  function markerStyle(subject, alertState, stale) {
    const style = { radius: 9, fillColor: statusColour(subject.status), fillOpacity: stale ? 0.35 : 0.95, dashArray: null };
    if (alertState && alertState.state === "open" && alertState.open_severity === "critical") {
      Object.assign(style, { color: "#ff1744", weight: 5, opacity: 1, radius: 11 });
    } else if (alertState && alertState.state === "open") {
      Object.assign(style, { color: "#ff9100", weight: 4, opacity: 1, radius: 10 });
    } else if (alertState) {
      Object.assign(style, { color: "#ff9100", weight: 3, opacity: 0.9, dashArray: "4 3" });
    } else if (stale) {
      Object.assign(style, { color: "#cfd8dc", weight: 2, opacity: 0.6, dashArray: "3 3" });
    } else {
      Object.assign(style, { color: "#ffffff", weight: 1.5, opacity: 0.9 });
    }
    return style;
  }

  function tooltipText(subject, alertState) {
    const parts = [`${subject.name} (${subject.external_id})`];
    parts.push(subject.status ? `status ${subject.status}` : "no status");
    if (subject.last_fix) parts.push(`last fix ${fmtTime(subject.last_fix.t)} (${ago(subject.last_fix.t)})`);
    if (alertState) parts.push(`${alertState.count} open alert(s), ${alertState.severity}`);
    return parts.join(" · ");
  }

  function drawSubject(subject) {
    if (!map) return;
    const id = subject.id;
    let marker = layers.markers.get(id);
    if (!subject.last_fix) {
      if (marker) { marker.remove(); layers.markers.delete(id); }
      return;
    }
    const latlng = [subject.last_fix.lat, subject.last_fix.lon];
    const alertState = alertStateOf(id);
    const stale = Date.now() - new Date(subject.last_fix.t).getTime() > STALE_AFTER_MS;
    const style = markerStyle(subject, alertState, stale);
    if (!marker) {
      marker = L.circleMarker(latlng, { ...style, pane: "markersPane", className: "subject-marker", bubblingMouseEvents: false });
      marker.on("click", () => selectSubject(id));
      marker.addTo(map);
      layers.markers.set(id, marker);
    } else {
      marker.setLatLng(latlng);
      marker.setStyle(style);
      marker.setRadius(style.radius);
    }
    // Names stay on screen for a small caseload, and always for a subject with an open alert.
    const alerting = Boolean(alertState && alertState.state === "open");
    const label = alerting ? "alerting" : state.subjects.size <= LABEL_ALL_UP_TO ? "name" : "hover";
    if (marker.getTooltip() && marker.labelMode !== label) marker.unbindTooltip();
    if (!marker.getTooltip()) {
      marker.bindTooltip("", { permanent: label !== "hover", direction: "top", offset: [0, -12], className: `subject-label ${label}` });
      marker.labelMode = label;
    }
    marker.setTooltipContent(label === "alerting" ? `${subject.name}: ${humanKind(alertState.kind || "alert")}`
      : label === "name" ? subject.name : tooltipText(subject, alertState));
    const path = marker.getElement();
    if (path) {
      path.setAttribute("data-subject-id", id);
      path.setAttribute("data-status", subject.status || "none");
      path.setAttribute("data-alert", alertState ? alertState.state : "none");
      path.setAttribute("data-severity", alertState ? alertState.severity : "none");
      path.setAttribute("data-stale", stale ? "true" : "false");
      path.setAttribute("data-lat", String(subject.last_fix.lat));
      path.setAttribute("data-lon", String(subject.last_fix.lon));
      path.classList.toggle("pulse", Boolean(alertState && alertState.open_severity === "critical"));
      path.classList.toggle("selected", state.selected === id);
    }
  }

  function zoneLayer(feature, subject, shared) {
    const props = feature.properties || {};
    const kind = props.kind || "zone";
    let style;
    if (shared) style = { color: "#ab47bc", weight: 1.5, fillOpacity: 0.12, dashArray: "6 4" };
    else if (kind === "exclusion") style = { color: "#ef5350", weight: 2, fillColor: "#ef5350", fillOpacity: 0.18 };
    else if (kind === "home" && props.source === "status") {
      style = { color: statusColour(props.status || subject.status), weight: 2, fillOpacity: 0.06, dashArray: "8 6" };
    } else if (kind === "home") style = { color: "#4dd0e1", weight: 2, fillOpacity: 0.07, dashArray: "8 6" };
    else style = { color: "#66bb6a", weight: 2, fillOpacity: 0.06, dashArray: "8 6" };
    style = { ...style, pane: "zonesPane", interactive: true, className: "zone" };
    const g = feature.geometry || {};
    let layer;
    if (g.type === "Point" && props.radius_m) {
      layer = L.circle([g.coordinates[1], g.coordinates[0]], { ...style, radius: Number(props.radius_m) });
    } else {
      layer = L.geoJSON(feature, { style: () => style, pointToLayer: (_f, ll) => L.circleMarker(ll, { ...style, radius: 4 }) });
    }
    const label = [shared ? "shared zone" : `${kind} zone`, props.name, subject ? subject.name : null,
      props.radius_m ? `${Math.round(props.radius_m)} m` : null, props.schedule ? "scheduled" : null].filter(Boolean).join(" · ");
    layer.bindTooltip(label, { sticky: true });
    if (subject) layer.on("click", () => selectSubject(subject.id));
    return layer;
  }

  function tagZone(layer, feature, subjectId) {
    const tag = (l) => {
      const p = l.getElement && l.getElement();
      if (!p) return;
      p.setAttribute("data-zone-id", feature.id || "");
      p.setAttribute("data-zone-kind", (feature.properties || {}).kind || "");
      if (subjectId) p.setAttribute("data-subject-id", subjectId);
    };
    if (layer.eachLayer) layer.eachLayer(tag); else tag(layer);
  }

  function drawZones(subject) {
    if (!map) return;
    const key = JSON.stringify(subject.zones);
    const current = layers.zones.get(subject.id);
    if (current && current.key === key) return;
    if (current) current.group.remove();
    const group = L.layerGroup().addTo(map);
    for (const f of (subject.zones && subject.zones.features) || []) {
      const layer = zoneLayer(f, subject, false).addTo(group);
      tagZone(layer, f, subject.id);
    }
    layers.zones.set(subject.id, { key, group });
  }

  function drawShared(collection) {
    if (!map) return;
    const key = JSON.stringify(collection);
    if (layers.shared && layers.shared.key === key) return;
    if (layers.shared) layers.shared.group.remove();
    const group = L.layerGroup().addTo(map);
    for (const f of collection.features || []) tagZone(zoneLayer(f, null, true).addTo(group), f, null);
    layers.shared = { key, group };
  }

  function fitAll() {
    if (!map) return;
    let bounds = null;
    const extend = (b) => { if (b && b.isValid()) bounds = bounds ? bounds.extend(b) : L.latLngBounds(b.getSouthWest(), b.getNorthEast()); };
    for (const m of layers.markers.values()) extend(L.latLngBounds([m.getLatLng()]));
    for (const z of layers.zones.values()) {
      z.group.eachLayer((l) => { if (l.getBounds) extend(l.getBounds()); else if (l.getLatLng) extend(L.latLngBounds([l.getLatLng()])); });
    }
    if (bounds) {
      const panel = state.selected ? [430, 0] : [0, 0]; // the subject panel covers the right
      map.fitBounds(bounds.pad(0.15), { maxZoom: 16, animate: false, paddingBottomRight: panel });
      state.fitted = true;
    }
  }

  async function loadOverview() {
    clearTimeout(state.overviewSoon);
    state.overviewSoon = null;
    let data;
    try {
      data = await api("/api/v1/map/subjects", { reason: true });
    } catch (e) {
      if (e.status !== 401) toast(`Map: ${e.message}`);
      return;
    }
    const seen = new Set();
    for (const s of data.subjects) {
      seen.add(s.id);
      const old = state.subjects.get(s.id);
      // A position already known from a newer alert stays until a newer fix arrives.
      if (old && old.last_fix && s.last_fix && new Date(old.last_fix.t) > new Date(s.last_fix.t)) s.last_fix = old.last_fix;
      state.subjects.set(s.id, s);
      drawZones(s);
      drawSubject(s);
    }
    for (const id of [...state.subjects.keys()]) {
      if (seen.has(id)) continue;
      state.subjects.delete(id);
      const m = layers.markers.get(id);
      if (m) { m.remove(); layers.markers.delete(id); }
      const z = layers.zones.get(id);
      if (z) { z.group.remove(); layers.zones.delete(id); }
    }
    drawShared(data.shared_zones || { features: [] });
    $("#map").dataset.subjects = String(data.subjects.length);
    $("#count-subjects").textContent = String(data.subjects.length);
    $("#map-empty").hidden = !map || layers.markers.size > 0 || layers.zones.size > 0;
    if (!state.fitted) fitAll();
    renderFeed(); // subject names may have arrived
  }

  function overviewSoon() {
    if (state.overviewSoon) return;
    state.overviewSoon = setTimeout(loadOverview, 1500);
  }

  // The latest position an alert tells of, if newer than the marker's.
  function moveByAlert(alert) {
    const s = state.subjects.get(alert.subject_id);
    if (!s) return;
    const lf = alert.detail && alert.detail.last_fix;
    const fix = lf && lf.lat != null ? { lat: lf.lat, lon: lf.lon, t: lf.t, acc: lf.acc, device_id: lf.device_id }
      : alert.lat != null ? { lat: alert.lat, lon: alert.lon, t: alert.fix_time || alert.received_at, acc: null, device_id: alert.device_id }
        : null;
    if (fix && fix.t && (!s.last_fix || new Date(fix.t) > new Date(s.last_fix.t))) s.last_fix = fix;
    drawSubject(s);
  }

  // ---- the live feed -------------------------------------------------------------------

  function subjectLabel(id) {
    const s = state.subjects.get(id);
    if (!s) return id ? `subject ${id.slice(0, 8)}…` : "no subject";
    return `${s.name} · ${s.external_id}`;
  }

  function applyAlert(alert, fromLive) {
    const old = state.alerts.get(alert.id);
    if (old && old.event_id >= alert.event_id) return;
    state.alerts.set(alert.id, alert);
    // A sound for a new critical alert, and again if it is escalated (detail.escalated_at).
    const escalated = Boolean(old && alert.detail && alert.detail.escalated_at &&
      alert.detail.escalated_at !== (old.detail || {}).escalated_at);
    if (fromLive && alert.severity === "critical" && alert.state !== "resolved" &&
      ((!old && alert.state === "open") || escalated)) beep();
    if (!old && fromLive) {
      const row = rowFor(alert);
      row.classList.add("fresh");
    }
    if (alert.state === "resolved") alert._resolvedSeen = Date.now();
    if (alert.subject_id && !state.subjects.has(alert.subject_id)) overviewSoon();
    else if (alert.subject_id) moveByAlert(alert);
    if (state.selected && alert.subject_id === state.selected) panelSoon();
  }

  function rowFor(alert) {
    let li = state.rows.get(alert.id);
    if (li) return li;
    const note = el("input", { type: "text", placeholder: "resolution note (required)", "data-role": "note", maxLength: 2000 });
    const form = el("form", { class: "resolve-form", hidden: true, "data-role": "resolve-form" },
      note,
      el("button", { type: "submit", "data-action": "confirm-resolve", text: "Resolve alert" }),
      el("button", { type: "button", "data-action": "cancel-resolve", text: "Cancel", onclick: () => { form.hidden = true; form.querySelector(".err").textContent = ""; } }),
      el("p", { class: "err", "data-role": "error" }));
    form.addEventListener("submit", (e) => { e.preventDefault(); resolveAlert(alert.id, li); });
    li = el("li", { class: "alert", "data-alert-id": alert.id },
      el("div", { class: "line1" }), el("div", { class: "line2" }), el("div", { class: "line3" }),
      el("div", { class: "actions" }), form);
    li.addEventListener("click", (e) => {
      if (e.target.closest("button, input, form")) return;
      const a = state.alerts.get(alert.id);
      if (a && a.subject_id) selectSubject(a.subject_id, a);
    });
    state.rows.set(alert.id, li);
    return li;
  }

  function fillRow(li, a) {
    li.className = `alert sev-${a.severity}${li.classList.contains("fresh") ? " fresh" : ""}`;
    li.dataset.state = a.state;
    li.dataset.severity = a.severity;
    li.dataset.kind = a.kind;
    li.dataset.subjectId = a.subject_id || "";
    li.dataset.eventId = String(a.event_id);
    const d = a.detail || {};
    const line1 = li.querySelector(".line1");
    line1.replaceChildren(...[
      el("span", { class: `sev ${a.severity}`, text: a.severity }),
      el("span", { class: "kind", text: humanKind(a.kind) }),
      el("span", { class: `chip state-${a.state}`, "data-role": "state", text: a.state }),
      d.cleared_at ? el("span", { class: "chip cleared", title: d.clear_reason || "", text: `cleared ${fmtTime(d.cleared_at)}` }) : null,
      el("span", { class: "when", title: `fix ${a.fix_time || "?"} · received ${a.received_at}`, text: `${fmtTime(a.fix_time || a.received_at)} · ${ago(a.fix_time || a.received_at)}` }),
    ].filter(Boolean));
    const extra = [];
    if (a.device_id) extra.push(a.device_id);
    if (d.count) extra.push(`${d.count} violating fix${d.count === 1 ? "" : "es"}`);
    if (d.worst_margin_m != null) extra.push(`${Math.round(Math.abs(d.worst_margin_m))} m beyond`);
    if (d.late) extra.push("uploaded late");
    li.querySelector(".line2").replaceChildren(el("span", { class: "who", text: subjectLabel(a.subject_id) }), extra.length ? ` · ${extra.join(" · ")}` : "");
    const who = [];
    if (d.acknowledged_by) who.push(`acknowledged by ${d.acknowledged_by} ${fmtTime(d.acknowledged_at)}`);
    if (d.resolved_by) who.push(`resolved by ${d.resolved_by} ${fmtTime(d.resolved_at)}: “${d.resolution_note || ""}”`);
    li.querySelector(".line3").textContent = who.join(" · ");
    li.querySelector(".line3").hidden = who.length === 0;
    const actions = li.querySelector(".actions");
    const want = a.state === "open" ? ["acknowledge", "resolve"] : a.state === "acknowledged" ? ["resolve"] : [];
    const have = [...actions.children].map((b) => b.dataset.action);
    if (have.join() !== want.join()) {
      actions.replaceChildren(...want.map((w) => el("button", {
        type: "button", "data-action": w, text: w === "acknowledge" ? "Acknowledge" : "Resolve…",
        onclick: () => (w === "acknowledge" ? acknowledgeAlert(a.id, li) : openResolve(li)),
      })));
    }
    if (a.state === "resolved") li.querySelector(".resolve-form").hidden = true;
  }

  function renderFeed() {
    const now = Date.now();
    for (const [id, a] of state.alerts) {
      if (a.state === "resolved" && now - (a._resolvedSeen || now) > KEEP_RESOLVED_MS) {
        state.alerts.delete(id);
        const li = state.rows.get(id);
        if (li) li.remove();
        state.rows.delete(id);
      }
    }
    const list = $("#feed");
    const ordered = [...state.alerts.values()].sort((x, y) =>
      (y.received_at || "").localeCompare(x.received_at || "") || y.event_id - x.event_id);
    ordered.forEach((a, i) => {
      const li = rowFor(a);
      fillRow(li, a);
      // Move only what is out of place, so a note being typed keeps its focus.
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    while (list.children.length > ordered.length) list.lastElementChild.remove();
    let unack = 0, critical = 0, open = 0;
    for (const a of ordered) {
      if (a.state === "resolved") continue;
      open += 1;
      if (a.state === "open") unack += 1;
      if (a.severity === "critical") critical += 1;
    }
    $("#count-unack").textContent = String(unack);
    $("#count-critical").textContent = String(critical);
    $("#count-open").textContent = String(open);
    $("#feed-empty").hidden = ordered.length > 0 || !state.feedReady;
    document.title = unack ? `(${unack}) Control centre` : "Control centre";
    indexAlerts();
    for (const s of state.subjects.values()) drawSubject(s);
  }

  let renderTimer = null;
  function renderSoon() {
    if (renderTimer === null) renderTimer = setTimeout(() => { renderTimer = null; renderFeed(); }, 30);
  }

  async function acknowledgeAlert(id, li) {
    const err = li.querySelector('[data-role="error"]');
    err.textContent = "";
    try {
      const a = await api(`/api/v1/alerts/${id}/acknowledge`, { method: "POST", body: {} });
      applyAlert(a, false);
      renderFeed();
    } catch (e) {
      if (e.status !== 401) { li.querySelector(".resolve-form").hidden = false; err.textContent = `Not acknowledged: ${e.message}`; }
    }
  }

  function openResolve(li) {
    const form = li.querySelector(".resolve-form");
    form.hidden = false;
    form.querySelector('[data-role="note"]').focus();
  }

  async function resolveAlert(id, li) {
    const form = li.querySelector(".resolve-form");
    const input = form.querySelector('[data-role="note"]');
    const err = form.querySelector('[data-role="error"]');
    const note = input.value.trim();
    if (!note) {
      err.textContent = "A note is required to resolve an alert.";
      input.focus();
      return;
    }
    err.textContent = "";
    for (const b of form.querySelectorAll("button")) b.disabled = true;
    try {
      const a = await api(`/api/v1/alerts/${id}/resolve`, { method: "POST", body: { note } });
      input.value = "";
      form.hidden = true;
      applyAlert(a, false);
      renderFeed();
    } catch (e) {
      if (e.status !== 401) err.textContent = `Not resolved: ${e.message}`;
    } finally {
      for (const b of form.querySelectorAll("button")) b.disabled = false;
    }
  }

  // ---- the websocket ---------------------------------------------------------------------

  function setConn(s, text) {
    const c = $("#conn");
    c.dataset.state = s;
    c.textContent = text;
  }

  function connect() {
    if (state.stopped) return;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    let url = `${proto}://${location.host}/api/v1/alerts/live?token=${encodeURIComponent(state.token)}`;
    if (state.lastEvent !== null) url += `&after=${state.lastEvent}`;
    setConn("connecting", state.retries ? "reconnecting…" : "connecting…");
    const ws = new WebSocket(url);
    state.ws = ws;
    ws.onopen = () => {
      if (state.ws !== ws) return;
      setConn("live", "live");
      $("#banner").hidden = true;
      // The back-off starts again only once the connection has proved itself.
      clearTimeout(state.stableTimer);
      state.stableTimer = setTimeout(() => (state.retries = 0), 5000);
    };
    ws.onmessage = (m) => {
      if (state.ws !== ws) return;
      const msg = JSON.parse(m.data);
      state.retries = 0;
      if (msg.type === "snapshot") {
        state.alerts.clear();
        for (const li of state.rows.values()) li.remove();
        state.rows.clear();
        state.feedReady = true;
        for (const a of msg.alerts) applyAlert(a, false);
        state.lastEvent = msg.event_id;
      } else if (msg.type === "alert") {
        state.feedReady = true;
        applyAlert(msg.alert, true);
        state.lastEvent = Math.max(state.lastEvent || 0, msg.alert.event_id);
      }
      renderSoon(); // a resume can bring a burst of events: draw once for all of them
    };
    ws.onclose = (e) => {
      if (state.ws !== ws || state.stopped) return;
      state.ws = null;
      clearTimeout(state.stableTimer);
      if (e.code === 4401) { logout("Your session has ended — log in again."); return; }
      if (e.code === 4403) { setConn("refused", "not allowed"); toast(e.reason || "your role may not watch alerts"); return; }
      state.retries += 1;
      const delay = Math.min(10_000, 1000 * 2 ** Math.min(state.retries - 1, 4));
      setConn("lost", "connection lost");
      const banner = $("#banner");
      banner.textContent = `connection lost — reconnecting (attempt ${state.retries}, ${Math.round(delay / 1000)} s)`;
      banner.hidden = false;
      state.reconnectTimer = setTimeout(connect, delay);
    };
  }

  // ---- the subject panel -----------------------------------------------------------------

  let panelTimer = null;
  let replayState = null;

  function panelSoon() {
    clearTimeout(panelTimer);
    panelTimer = setTimeout(() => state.selected && loadPanel(state.selected, false), 1500);
  }

  function selectSubject(id, alert) {
    const before = state.selected;
    state.selected = id;
    if (before && before !== id) { const s = state.subjects.get(before); if (s) drawSubject(s); }
    const s = state.subjects.get(id);
    if (s) drawSubject(s);
    if (map && alert && alert.lat != null) map.panTo([alert.lat, alert.lon]);
    loadPanel(id, true);
  }

  function closePanel() {
    const id = state.selected;
    state.selected = null;
    stopReplay();
    if (layers.track) { layers.track.remove(); layers.track = null; }
    const p = $("#panel");
    p.hidden = true;
    p.dataset.state = "closed";
    p.dataset.subjectId = "";
    const s = id && state.subjects.get(id);
    if (s) drawSubject(s);
  }

  function dl(pairs) {
    const out = [];
    for (const [k, v] of pairs) if (v !== null && v !== undefined && v !== "") out.push(el("dt", { text: k }), el("dd", { text: String(v) }));
    return out;
  }

  function ruleText(r, subject) {
    const where = r.zone_id ? (subject.zones || []).find((z) => z.id === r.zone_id) : null;
    const props = (where && where.properties) || {};
    const name = props.name || (r.key.startsWith("status:") ? "status home" : `${r.kind} zone`);
    const radius = props.radius_m ? ` (${Math.round(props.radius_m)} m)` : "";
    const verb = r.must_be_inside ? "must stay inside" : "must not enter";
    const sched = r.scheduled ? (r.active_now ? ", scheduled: active now" : ", scheduled: not active now") : "";
    return `${verb} ${name}${radius} — ${humanKind(r.kind)}, ${r.severity}${sched}`;
  }

  async function loadPanel(id, fit) {
    const p = $("#panel");
    p.hidden = false;
    if (p.dataset.subjectId !== id) {
      stopReplay();
      p.dataset.subjectId = id;
      const s = state.subjects.get(id);
      $("#panel-name").textContent = s ? s.name : "…";
      $("#panel-sub").textContent = s ? s.external_id : "";
      for (const sel of ["#panel-details", "#panel-rules", "#panel-alerts tbody"]) $(sel).replaceChildren();
      $("#panel-track").textContent = "loading…";
    }
    p.dataset.state = "loading";
    $("#panel-error").textContent = "";
    let subject, track;
    try {
      [subject, track] = await Promise.all([
        api(`/api/v1/subjects/${id}`, { reason: true }),
        api(`/api/v1/map/subjects/${id}/track?hours=24`, { reason: true }),
      ]);
    } catch (e) {
      if (state.selected !== id) return;
      p.dataset.state = "error";
      $("#panel-error").textContent = e.message;
      return;
    }
    if (state.selected !== id) return;
    const mapView = state.subjects.get(id);
    $("#panel-name").textContent = subject.name;
    $("#panel-sub").replaceChildren(
      el("span", { class: `status-chip ${subject.status || "none"}`, "data-role": "status", text: subject.status || "no status" }),
      ` ${subject.external_id}`);
    const order = subject.status_order || {};
    const lf = mapView && mapView.last_fix;
    $("#panel-details").replaceChildren(...dl([
      ["External ID", subject.external_id],
      ["Officer", subject.officer || "—"],
      ["Time zone", subject.timezone],
      ["Status since", order.effective_at ? `${fmtTime(order.effective_at)} (set by ${order.set_by || "?"})` : null],
      ["Home", order.home ? `${order.home[1].toFixed(5)}, ${order.home[0].toFixed(5)}${order.radius_m ? ` · ${Math.round(order.radius_m)} m` : ""}` : null],
      ["Last fix", lf ? `${fmtTime(lf.t)} (${ago(lf.t)})${lf.acc != null ? ` ± ${Math.round(lf.acc)} m` : ""}${lf.device_id ? ` · ${lf.device_id}` : ""}` : "none"],
    ]));
    const rules = subject.rules || [];
    $("#panel-rules").replaceChildren(...(rules.length ? rules.map((r) =>
      el("li", { class: r.active_now === false ? "inactive" : "", "data-rule": r.key, text: ruleText(r, subject) }))
      : [el("li", { class: "inactive", text: "no restriction" })]));
    const tbody = $("#panel-alerts tbody");
    tbody.replaceChildren(...(track.alerts.length ? track.alerts.map((a) => el("tr", { "data-alert-id": a.id, "data-state": a.state },
      el("td", { text: fmtTime(a.fix_time || a.received_at) }),
      el("td", {}, el("span", { class: `sev ${a.severity}`, text: a.severity }), ` ${humanKind(a.kind)}`),
      el("td", {}, el("span", { class: `chip state-${a.state}`, text: a.state })),
      el("td", { class: "note", text: (a.detail && a.detail.resolution_note) || "" })))
      : [el("tr", {}, el("td", { class: "muted", text: "no alerts" }))]));
    drawTrack(track, fit);
    p.dataset.state = "ready";
  }

  function drawTrack(track, fit) {
    stopReplay();
    if (layers.track) { layers.track.remove(); layers.track = null; }
    const fixes = track.fixes.features;
    const info = $("#panel-track");
    const replay = $("#replay");
    replay.dataset.replay = "idle";
    $("#replay-time").textContent = "";
    info.textContent = fixes.length
      ? `${fixes.length} fix${fixes.length === 1 ? "" : "es"}, ${fmtTime(fixes[0].properties.t)} – ${fmtTime(fixes[fixes.length - 1].properties.t)}${track.truncated ? " (latest 10,000 only)" : ""}`
      : "no fixes in the last 24 h";
    $("#panel").dataset.fixes = String(fixes.length);
    replay.disabled = fixes.length < 2 || !map;
    if (!map || !fixes.length) return;
    const group = L.layerGroup().addTo(map);
    const latlngs = fixes.map((f) => [f.geometry.coordinates[1], f.geometry.coordinates[0]]);
    const line = L.polyline(latlngs, { color: "#80deea", weight: 3, opacity: 0.9, pane: "trackPane", className: "track-line" }).addTo(group);
    const lineEl = line.getElement();
    if (lineEl) lineEl.setAttribute("data-role", "track");
    fixes.forEach((f, i) => {
      const dot = L.circleMarker(latlngs[i], { radius: 3, color: "#80deea", weight: 1, fillColor: "#0f1419", fillOpacity: 1, pane: "trackPane" });
      const pr = f.properties;
      dot.bindTooltip(`${fmtTime(pr.t)}${pr.acc != null ? ` ± ${Math.round(pr.acc)} m` : ""} · ${pr.device_id}`);
      dot.addTo(group);
    });
    // Where the alerts of the history happened.
    for (const a of track.alerts) {
      if (a.lat == null || a.lon == null) continue;
      const spot = L.circleMarker([a.lat, a.lon], { radius: 5, color: "#ff1744", weight: 2, fillColor: "#ff1744", fillOpacity: 0.5, pane: "trackPane", className: "alert-spot" });
      spot.bindTooltip(`${humanKind(a.kind)} · ${a.severity} · ${fmtTime(a.fix_time || a.received_at)} · ${a.state}`);
      spot.addTo(group);
      const e = spot.getElement();
      if (e) e.setAttribute("data-alert-id", a.id);
    }
    layers.track = group;
    layers.track.fixes = fixes;
    layers.track.latlngs = latlngs;
    if (fit) {
      let b = line.getBounds();
      const z = layers.zones.get(track.subject_id);
      if (z) z.group.eachLayer((l) => { if (l.getBounds) b = b.extend(l.getBounds()); });
      map.fitBounds(b.pad(0.2), { maxZoom: 17, animate: false, paddingBottomRight: [430, 0] });
    }
  }

  function stopReplay() {
    if (replayState) {
      clearTimeout(replayState.frame);
      clearTimeout(replayState.hide);
      replayState.marker.remove();
      replayState = null;
    }
  }

  function startReplay() {
    if (!layers.track || !map) return;
    stopReplay();
    const pts = layers.track.latlngs;
    const fixes = layers.track.fixes;
    const button = $("#replay");
    const label = $("#replay-time");
    const marker = L.circleMarker(pts[0], { radius: 8, color: "#fff", weight: 2, fillColor: "#00e5ff", fillOpacity: 1, pane: "markersPane", className: "replay-marker", interactive: false }).addTo(map);
    const duration = Math.min(20_000, Math.max(3000, pts.length * 250));
    const start = performance.now();
    button.dataset.replay = "running";
    // Timers rather than animation frames: a browser pauses animation frames in a tab
    // that is not visible (a control-room screen behind another window), timers not.
    const step = () => {
      const p = Math.min(1, (performance.now() - start) / duration);
      const x = p * (pts.length - 1);
      const i = Math.min(pts.length - 2, Math.floor(x));
      const f = x - i;
      marker.setLatLng([pts[i][0] + (pts[i + 1][0] - pts[i][0]) * f, pts[i][1] + (pts[i + 1][1] - pts[i][1]) * f]);
      const t0 = new Date(fixes[i].properties.t).getTime();
      const t1 = new Date(fixes[i + 1].properties.t).getTime();
      label.textContent = fmtTime(new Date(t0 + (t1 - t0) * f).toISOString());
      if (p < 1) {
        replayState.frame = setTimeout(step, 33);
      } else {
        button.dataset.replay = "done";
        // Leave the subject's own marker visible again once the replay has ended.
        replayState.hide = setTimeout(() => marker.remove(), 1500);
      }
    };
    replayState = { marker, frame: setTimeout(step, 0), hide: null };
  }

  // ---- log in, start, log out ----------------------------------------------------------

  async function start() {
    document.body.dataset.view = "app";
    $("#app").hidden = false;
    for (const id of ["#counts", "#logout", "#sound", "#search"]) $(id).hidden = false;
    $("#who").textContent = state.username;
    showSound();
    state.stopped = false;
    let tileUrl = "";
    try {
      tileUrl = (await api("/api/v1/dashboard/config")).tile_url || "";
    } catch (e) {
      if (e.status === 401) return;
    }
    if (!map) initMap(tileUrl);
    connect();
    await loadOverview();
    state.overviewTimer = setInterval(loadOverview, OVERVIEW_EVERY_MS);
    setInterval(() => renderFeed(), 30_000); // relative times, pruning of resolved rows
  }

  function logout(message) {
    state.stopped = true;
    if (state.ws) state.ws.close(1000, "logged out");
    sessionStorage.removeItem("token");
    if (message) sessionStorage.setItem("loginNote", message);
    location.reload();
  }

  $("#login").addEventListener("submit", async (e) => {
    e.preventDefault();
    unlockAudio(); // a click: the browser lets the page make sound from now on
    const form = new FormData(e.target);
    if (!form.get("otp")) form.delete("otp");
    $("#login-error").textContent = "";
    let r;
    try {
      r = await fetch("/api/v1/auth/token", { method: "POST", body: new URLSearchParams(form) });
    } catch (err) {
      $("#login-error").textContent = "the service cannot be reached";
      return;
    }
    if (!r.ok) {
      const data = await r.json().catch(() => null);
      // The service says why: wrong password, a one-time code needed, a locked account.
      $("#login-error").textContent = (data && data.detail && explain(data.detail)) || `login refused (HTTP ${r.status})`;
      return;
    }
    state.token = (await r.json()).access_token;
    state.username = String(form.get("username"));
    sessionStorage.setItem("token", state.token);
    sessionStorage.setItem("username", state.username);
    start();
  });

  $("#logout").addEventListener("click", async () => {
    try { // end the session on the server too; leave anyway if it cannot be reached
      await fetch("/api/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${state.token}` } });
    } catch (e) { /* offline: the session expires by itself */ }
    logout(null);
  });
  $("#panel-close").addEventListener("click", closePanel);
  $("#replay").addEventListener("click", startReplay);
  $("#fit").addEventListener("click", fitAll);
  $("#sound").addEventListener("click", () => {
    if (!audio || audio.state !== "running") { state.muted = false; unlockAudio(); } else { state.muted = !state.muted; showSound(); }
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && state.selected) closePanel(); });
  $("#search").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    const q = e.target.value.trim().toLowerCase();
    if (!q) return;
    const hit = [...state.subjects.values()].find((s) => s.name.toLowerCase().includes(q) || s.external_id.toLowerCase().includes(q));
    if (!hit) { toast(`no subject matches “${q}”`); return; }
    if (map && hit.last_fix) map.setView([hit.last_fix.lat, hit.last_fix.lon], Math.max(map.getZoom(), 15));
    selectSubject(hit.id);
  });

  const note = sessionStorage.getItem("loginNote");
  if (note) {
    sessionStorage.removeItem("loginNote");
    $("#login-note").textContent = note;
    $("#login-note").hidden = false;
  }
  if (state.token) start();
  else $("#username").focus();

  // For the browser test and for debugging from the console.
  window.dashboard = { state, layers, get map() { return map; } };
})();
