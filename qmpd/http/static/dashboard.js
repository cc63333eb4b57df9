// qmpd dashboard: CPU topology with hot-plug, pause/resume and a QMP event log.
//
// Nothing here polls.  Two WebSockets drive every update:
//   /qmp          a QMP session; each event (and each command reply) triggers a
//                 re-fetch of /api/v1/cpus and /api/v1/machine;
//   /api/v1/live  server-pushed frames every 0.5 s; instruction rates are the
//                 difference of consecutive frames, and slot state/online/runstate
//                 are refreshed from them.
// Both reconnect with exponential backoff when they close.

const TOKEN = new URLSearchParams(location.search).get("token");
const MAX_LOG_ENTRIES = 300;
const MAX_DATA_CHARS = 240;
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 8000;

const state = {
  machine: null,
  cpus: [], // /api/v1/cpus entries, ordered by slot
  layoutKey: "", // which slots exist and where: the topology is rebuilt only when it changes
  slotViews: new Map(), // slot index -> the elements of its box
  samples: new Map(), // slot index -> {time, instructions} from the previous live frame
  rates: new Map(), // slot index -> instructions per second, or null when unknown
  pending: new Set(), // slot indexes with a plug/unplug command in flight
  policies: new Map(), // slot index -> its guest hot-plug policy (/api/v1/guest-policy "slots")
  runstate: "unknown",
};

// ---------------------------------------------------------------- helpers

function authHeaders() {
  return TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
}

async function getJSON(path) {
  const response = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (!response.ok) {
    throw new Error(`GET ${path}: HTTP ${response.status}`);
  }
  return response.json();
}

function wsURL(path) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : "";
  url.hash = "";
  return url.href;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.dataset[camel(key.slice(5))] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function camel(name) {
  return name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
}

function formatBytes(bytes) {
  if (bytes == null) return "? RAM";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1 && value % 1024 === 0) {
    value /= 1024;
    unit += 1;
  }
  return `${value} ${units[unit]}`;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function formatRate(rate) {
  if (rate == null) return "— M instr/s";
  const millions = rate / 1e6;
  const digits = millions >= 100 ? 0 : millions >= 10 ? 1 : 2;
  return `${millions.toFixed(digits)} M instr/s`;
}

// "Haswell-x86_64-cpu" -> "Haswell": the suffix is the same for every slot.
function modelName(type) {
  return type ? type.replace(/-x86_64-cpu$/, "") : "—";
}

function formatTime(date) {
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

function compactJSON(value) {
  if (value === undefined) return "";
  const text = JSON.stringify(value);
  return text.length > MAX_DATA_CHARS ? `${text.slice(0, MAX_DATA_CHARS - 1)}…` : text;
}

// ---------------------------------------------------------------- event log

function addLogEntry({ name, data, date = new Date(), kind = "event" }) {
  const log = document.getElementById("event-log");
  const dataText = typeof data === "string" ? data : compactJSON(data);
  const entry = el(
    "li",
    { class: `log-entry ${kind}`, "data-event": name, "data-kind": kind },
    el("time", { datetime: date.toISOString(), text: formatTime(date) }),
    el("span", { class: "name", text: name }),
    el("code", { class: "data", text: dataText }),
  );
  if (dataText.length >= MAX_DATA_CHARS) {
    entry.title = typeof data === "string" ? data : JSON.stringify(data);
  }
  log.prepend(entry); // newest first
  while (log.children.length > MAX_LOG_ENTRIES) {
    log.lastElementChild.remove();
  }
}

function logEvent(message) {
  const ts = message.timestamp;
  const date = ts ? new Date(ts.seconds * 1000 + Math.floor(ts.microseconds / 1000)) : new Date();
  addLogEntry({ name: message.event, data: message.data ?? {}, date, kind: "event" });
}

function logError(name, detail) {
  addLogEntry({ name, data: detail, kind: "error" });
}

function logInfo(name, detail = "") {
  addLogEntry({ name, data: detail, kind: "info" });
}

// ---------------------------------------------------------------- REST state

// Serialised re-fetch: events often come in bursts, so a request that arrives while
// one is running just asks for one more round afterwards.
let refreshRunning = false;
let refreshAgain = false;

async function refresh() {
  if (refreshRunning) {
    refreshAgain = true;
    return;
  }
  refreshRunning = true;
  try {
    do {
      refreshAgain = false;
      try {
        const [machine, cpus, policy] = await Promise.all([
          getJSON("/api/v1/machine"),
          getJSON("/api/v1/cpus"),
          getJSON("/api/v1/guest-policy"),
        ]);
        state.machine = machine;
        state.cpus = cpus.cpus ?? [];
        state.policies = new Map((policy.slots ?? []).map((entry) => [entry.slot, entry]));
        setRunstate(machine.runstate);
        render();
      } catch (error) {
        logError("refresh", String(error?.message ?? error));
      }
    } while (refreshAgain);
  } finally {
    refreshRunning = false;
  }
}

function cpuBySlot(slot) {
  return state.cpus.find((cpu) => cpu.slot === slot);
}

function slotState(cpu) {
  if (!cpu.present) return "absent";
  if (cpu.state === "crashed") return "crashed";
  return cpu.online ? "online" : "offline";
}

// ---------------------------------------------------------------- rendering

function setRunstate(runstate) {
  if (!runstate) return;
  state.runstate = runstate;
  const badge = document.getElementById("runstate");
  badge.textContent = runstate;
  badge.dataset.runstate = runstate;
  document.body.dataset.runstate = runstate;
}

function renderSummary() {
  const machine = state.machine;
  if (!machine) return;
  const topo = machine.topology ?? {};
  const present = state.cpus.filter((cpu) => cpu.present).length;
  const online = state.cpus.filter((cpu) => cpu.present && cpu.online).length;
  const parts = [
    machine.type,
    machine.model ?? modelName(machine.cpu_type),
    formatBytes(machine.ram_bytes),
    `${plural(topo.sockets, "socket")} × ${plural(topo.dies, "die")} × ${plural(topo.cores, "core")} × ${plural(topo.threads, "thread")}`,
    `${present}/${topo.max_cpus} CPUs present, ${online} online (boot ${topo.boot_cpus})`,
  ];
  document.getElementById("summary-text").textContent = parts.join(" · ");
  document.getElementById("machine-name").textContent = machine.name ?? "";
  document.title = machine.name ? `qmpd · ${machine.name}` : "qmpd";
}

function render() {
  const layoutKey = state.cpus
    .map((cpu) => `${cpu.slot}:${cpu.socket_id}/${cpu.die_id}/${cpu.core_id}/${cpu.thread_id}`)
    .join(",");
  if (layoutKey !== state.layoutKey) {
    buildTopology();
    state.layoutKey = layoutKey;
  }
  for (const cpu of state.cpus) {
    updateSlot(cpu);
  }
  renderSummary();
}

function box(kind, label) {
  const body = el("div", { class: "box-body" });
  const root = el("div", { class: `box ${kind}` }, el("div", { class: "box-label", text: label }), body);
  return { root, body };
}

function groupBy(items, key) {
  const groups = new Map();
  for (const item of items) {
    const k = key(item) ?? 0;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(item);
  }
  return [...groups.entries()].sort((a, b) => a[0] - b[0]);
}

// Sockets -> dies -> cores -> thread slots, grouped from the slots' own IDs so the
// drawing matches what the machine reports even if the topology summary lags.
function buildTopology() {
  const root = document.getElementById("topology");
  root.replaceChildren();
  state.slotViews.clear();
  for (const [socketId, socketCpus] of groupBy(state.cpus, (cpu) => cpu.socket_id)) {
    const socketBox = box("socket", `socket ${socketId}`);
    for (const [dieId, dieCpus] of groupBy(socketCpus, (cpu) => cpu.die_id)) {
      const dieBox = box("die", `die ${dieId}`);
      for (const [coreId, coreCpus] of groupBy(dieCpus, (cpu) => cpu.core_id)) {
        const coreBox = box("core", `core ${coreId}`);
        for (const [, threadCpus] of groupBy(coreCpus, (cpu) => cpu.thread_id)) {
          for (const cpu of threadCpus) coreBox.body.append(buildSlot(cpu));
        }
        dieBox.body.append(coreBox.root);
      }
      socketBox.body.append(dieBox.root);
    }
    root.append(socketBox.root);
  }
}

function flag(name) {
  return el("span", { class: "flag", "data-flag": name, text: name });
}

function buildSlot(cpu) {
  const view = {
    title: el("span", { class: "slot-title" }),
    status: el("span", { class: "slot-status" }),
    model: el("dd", { class: "model" }),
    apic: el("dd", { class: "apic" }),
    ident: el("dd", { class: "ident" }),
    qom: el("div", { class: "qom" }),
    rate: el("div", { class: "rate", "data-rate": "" }),
    flags: {
      present: flag("present"),
      online: flag("online"),
      running: flag("running"),
    },
    plug: el("button", { type: "button", class: "small plug", "data-action": "plug", text: "Plug" }),
    unplug: el("button", { type: "button", class: "small unplug", "data-action": "unplug", text: "Unplug" }),
    fixed: el("span", { class: "fixed muted", text: "not hot-pluggable" }),
    policy: buildPolicyControls(cpu.slot),
  };
  view.plug.addEventListener("click", () => plug(cpu.slot));
  view.unplug.addEventListener("click", () => unplug(cpu.slot));
  view.root = el(
    "div",
    { class: "slot", "data-slot": String(cpu.slot), "data-state": slotState(cpu) },
    el("div", { class: "slot-head" }, view.title, view.status),
    el("div", { class: "flags" }, view.flags.present, view.flags.online, view.flags.running),
    el(
      "dl",
      { class: "slot-info" },
      el("dt", { text: "model" }),
      view.model,
      el("dt", { text: "APIC ID" }),
      view.apic,
      el("dt", { text: "id" }),
      view.ident,
    ),
    view.qom,
    view.rate,
    el("div", { class: "slot-actions" }, view.plug, view.unplug, view.fixed),
    view.policy.root,
  );
  state.slotViews.set(cpu.slot, view);
  return view.root;
}

function updateSlot(cpu) {
  const view = state.slotViews.get(cpu.slot);
  if (!view) return;
  const slotStateName = slotState(cpu);
  const running = cpu.present && cpu.state === "running";
  view.root.dataset.state = slotStateName;
  view.title.textContent = `slot ${cpu.slot}`;
  view.status.textContent = cpu.present ? cpu.state : "absent";
  view.model.textContent = modelName(cpu.type);
  view.model.title = cpu.type ?? "";
  view.apic.textContent = cpu.apic_id ?? "—";
  view.ident.textContent = cpu.present && cpu.id ? cpu.id : "—";
  // The QOM path is what unplug deletes; "/machine/" is the same for all, so it is left out.
  view.qom.textContent = cpu.present && cpu.qom_path ? cpu.qom_path.replace(/^\/machine\//, "") : "";
  view.qom.title = cpu.qom_path ?? "";
  view.root.title = [
    `props ${JSON.stringify(cpu.props)}`,
    cpu.qom_path ? `QOM ${cpu.qom_path}` : null,
    cpu.host_thread_id != null ? `host thread ${cpu.host_thread_id}` : null,
  ]
    .filter(Boolean)
    .join("\n");
  view.flags.present.classList.toggle("on", Boolean(cpu.present));
  view.flags.online.classList.toggle("on", Boolean(cpu.present && cpu.online));
  view.flags.running.classList.toggle("on", running);

  const rate = cpu.present ? (state.rates.get(cpu.slot) ?? null) : null;
  view.rate.textContent = cpu.present ? formatRate(rate) : "";
  view.rate.dataset.rate = rate == null ? "" : String(Math.round(rate));

  // Only the action that applies is shown: plug a free slot, unplug a hot-pluggable CPU.
  const busy = state.pending.has(cpu.slot);
  view.plug.hidden = Boolean(cpu.present);
  view.unplug.hidden = !(cpu.present && cpu.hotpluggable);
  view.fixed.hidden = !(cpu.present && !cpu.hotpluggable);
  view.plug.disabled = busy;
  view.unplug.disabled = busy;
  view.root.classList.toggle("busy", busy);
  updatePolicyControls(view.policy, state.policies.get(cpu.slot));
}

// ---------------------------------------------------------------- guest hot-plug policy

// Each slot shows the policy the firmware applies to it (and which qmpd-guest-policy object
// it comes from); changing it here PUTs a policy of its own for that one slot, "dashboard-slotN",
// which is more specific than any policy naming more slots.
function policyId(slot) {
  return `dashboard-slot${slot}`;
}

function choice(name, values) {
  return el("select", { class: "policy-field", "data-field": name, title: name }, ...values.map((v) => el("option", { value: v, text: v })));
}

function buildPolicyControls(slot) {
  const view = {
    source: el("span", { class: "policy-source muted" }),
    onPlug: choice("on-plug", ["online", "ignore", "fail"]),
    onUnplug: choice("on-unplug", ["eject", "ignore", "refuse"]),
    status: el("input", { class: "policy-field", type: "number", min: "0", max: "255", title: "ost-status", "data-field": "ost-status" }),
    delay: el("input", { class: "policy-field", type: "number", min: "0", max: "60000", step: "100", title: "delay-ms", "data-field": "delay-ms" }),
    apply: el("button", { type: "button", class: "small", "data-action": "policy", text: "Set" }),
    reset: el("button", { type: "button", class: "small", "data-action": "policy-reset", text: "Reset" }),
  };
  view.apply.addEventListener("click", () => setPolicy(slot, view));
  view.reset.addEventListener("click", () => resetPolicy(slot));
  view.root = el(
    "div",
    { class: "slot-policy" },
    el("div", { class: "policy-head" }, el("span", { text: "guest policy" }), view.source),
    el("div", { class: "policy-row" }, view.onPlug, view.onUnplug),
    el("div", { class: "policy-row" }, view.status, view.delay, view.apply, view.reset),
  );
  return view;
}

function updatePolicyControls(view, policy) {
  if (!policy) return;
  view.source.textContent = policy.policy ?? "default";
  view.reset.hidden = policy.policy !== policyId(policy.slot);
  // Leave a control alone while the user is editing it.
  for (const [control, value] of [
    [view.onPlug, policy["on-plug"]],
    [view.onUnplug, policy["on-unplug"]],
    [view.status, String(policy["ost-status"])],
    [view.delay, String(policy["delay-ms"])],
  ]) {
    if (document.activeElement !== control) control.value = value;
  }
}

async function policyRequest(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { ...authHeaders(), "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const reply = await response.json().catch(() => ({}));
    throw new Error(reply?.error?.desc ?? `HTTP ${response.status}`);
  }
}

async function setPolicy(slot, view) {
  const body = {
    id: policyId(slot),
    slots: String(slot),
    "on-plug": view.onPlug.value,
    "on-unplug": view.onUnplug.value,
    "ost-status": Number(view.status.value),
    "delay-ms": Number(view.delay.value),
  };
  try {
    await policyRequest("PUT", "/api/v1/guest-policy", body);
    logInfo(`policy slot ${slot}`, body);
  } catch (error) {
    logError(`policy slot ${slot}`, String(error?.message ?? error));
  }
  refresh();
}

async function resetPolicy(slot) {
  try {
    await policyRequest("DELETE", `/api/v1/guest-policy/${policyId(slot)}`);
    logInfo(`policy slot ${slot}`, "reset");
  } catch (error) {
    logError(`policy slot ${slot}`, String(error?.message ?? error));
  }
  refresh();
}

// ---------------------------------------------------------------- commands

async function runSlotCommand(slot, command, args, label) {
  state.pending.add(slot);
  const cpu = cpuBySlot(slot);
  if (cpu) updateSlot(cpu);
  try {
    await qmp.execute(command, args);
    logInfo(`${label} slot ${slot}`, `${command} ok`);
  } catch (error) {
    logError(`${label} slot ${slot}`, String(error?.message ?? error));
  } finally {
    state.pending.delete(slot);
    const current = cpuBySlot(slot);
    if (current) updateSlot(current);
    // A reply need not come with an event (the ACPI acknowledgement follows later), so look now too.
    refresh();
  }
}

function plug(slot) {
  const cpu = cpuBySlot(slot);
  if (!cpu || cpu.present) return;
  runSlotCommand(slot, "device_add", { driver: cpu.type, ...cpu.props }, "plug");
}

function unplug(slot) {
  const cpu = cpuBySlot(slot);
  if (!cpu || !cpu.present) return;
  const id = cpu.qom_path ?? cpu.id;
  if (!id) {
    logError(`unplug slot ${slot}`, "the CPU has no QOM path or id to delete");
    return;
  }
  runSlotCommand(slot, "device_del", { id }, "unplug");
}

async function runMachineCommand(command) {
  try {
    await qmp.execute(command);
    logInfo(command, "ok");
  } catch (error) {
    logError(command, String(error?.message ?? error));
  }
  refresh();
}

// ---------------------------------------------------------------- WebSockets

function setConnected(name, connected) {
  const badge = document.getElementById(`conn-${name}`);
  badge.dataset.connected = String(connected);
}

class QMPError extends Error {
  constructor(error) {
    super(`${error.class}: ${error.desc}`);
    this.qmpClass = error.class;
  }
}

// Reconnects after a close, waiting longer each time until a session is established.
class Reconnecting {
  constructor(name, path) {
    this.name = name;
    this.path = path;
    this.backoff = BACKOFF_MIN_MS;
    this.socket = null;
  }

  connect() {
    const socket = new WebSocket(wsURL(this.path));
    this.socket = socket;
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        logError(this.name, `not JSON: ${String(event.data).slice(0, 80)}`);
        return;
      }
      this.onMessage(message);
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      const wasUp = this.onClose();
      const delay = this.backoff * (0.75 + Math.random() * 0.5);
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
      if (wasUp) logError(this.name, `connection closed; reconnecting in ${(delay / 1000).toFixed(1)} s`);
      setTimeout(() => this.connect(), delay);
    });
  }

  established() {
    this.backoff = BACKOFF_MIN_MS;
    setConnected(this.name, true);
  }
}

class QMPSocket extends Reconnecting {
  constructor() {
    super("qmp", "/qmp");
    this.ready = false;
    this.nextId = 1;
    this.pending = new Map(); // command id -> {resolve, reject}
  }

  send(message) {
    this.socket.send(JSON.stringify(message));
  }

  onMessage(message) {
    if ("QMP" in message) {
      this.send({ execute: "qmp_capabilities", id: "caps" });
      return;
    }
    if ("event" in message) {
      logEvent(message);
      refresh();
      return;
    }
    if (!this.ready && (message.id === "caps" || message.id === undefined)) {
      if ("return" in message) {
        this.ready = true;
        this.established();
        logInfo("qmp", "connected");
        refresh(); // events may have been missed while disconnected
      } else {
        logError("qmp_capabilities", compactJSON(message.error));
        this.socket?.close();
      }
      return;
    }
    const waiter = this.pending.get(message.id);
    if (!waiter) return;
    this.pending.delete(message.id);
    if ("error" in message) waiter.reject(new QMPError(message.error));
    else waiter.resolve(message.return);
  }

  onClose() {
    const wasUp = this.ready;
    this.ready = false;
    setConnected(this.name, false);
    for (const waiter of this.pending.values()) {
      waiter.reject(new Error("QMP connection closed before the reply"));
    }
    this.pending.clear();
    return wasUp;
  }

  execute(command, args) {
    if (!this.ready || !this.socket) {
      return Promise.reject(new Error("QMP is not connected"));
    }
    const id = this.nextId++;
    const message = { execute: command, id };
    if (args !== undefined) message.arguments = args;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send(message);
    });
  }
}

class LiveSocket extends Reconnecting {
  constructor() {
    super("live", "/api/v1/live");
    this.up = false;
    this.refreshAsked = false;
  }

  onMessage(frame) {
    if (!this.up) {
      this.up = true;
      this.established();
      state.samples.clear(); // frames from before the gap do not give a rate
    }
    setRunstate(frame.runstate);
    let layoutChanged = false;
    for (const sample of frame.cpus ?? []) {
      const previous = state.samples.get(sample.slot);
      let rate = null;
      if (sample.instructions != null && previous?.instructions != null) {
        const dt = frame.time - previous.time;
        const delta = sample.instructions - previous.instructions;
        // A negative delta means a new vCPU in the slot (its counter restarted).
        if (dt > 0 && delta >= 0) rate = delta / dt;
      }
      state.samples.set(sample.slot, { time: frame.time, instructions: sample.instructions });
      state.rates.set(sample.slot, sample.present ? rate : null);
      const cpu = cpuBySlot(sample.slot);
      if (!cpu) continue;
      // A plug or unplug changes more than these fields (QOM path, id): fetch the full view.
      if (Boolean(cpu.present) !== Boolean(sample.present)) layoutChanged = true;
      cpu.present = sample.present;
      cpu.online = sample.online;
      cpu.state = sample.state;
      updateSlot(cpu);
    }
    renderSummary();
    if (layoutChanged) refresh();
  }

  onClose() {
    const wasUp = this.up;
    this.up = false;
    setConnected(this.name, false);
    return wasUp;
  }
}

const qmp = new QMPSocket();
const live = new LiveSocket();

// ---------------------------------------------------------------- start

document.getElementById("pause").addEventListener("click", () => runMachineCommand("stop"));
document.getElementById("resume").addEventListener("click", () => runMachineCommand("cont"));
document.getElementById("clear-log").addEventListener("click", () => {
  document.getElementById("event-log").replaceChildren();
});

refresh();
qmp.connect();
live.connect();
