import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import type { InstanceInfo } from "../../../src/api/types.generated.js";
import { api, bearerProtocol, token } from "../api.js";
import { bytes, duration, h, toast } from "../dom.js";
import type { Page } from "../main.js";
import { cpuPercent, startCell, stateBadge } from "./instances.js";

const LIVE = new Set(["starting", "running", "stalled", "paused"]);
const ENDED = new Set(["exited", "failed"]);

/**
 * instancePage is one instance: its facts (polled every 2 s), stop / remove / snapshot as… /
 * inject, and its serial console as a live terminal (xterm.js on the console WebSocket: output
 * in, keystrokes out), with a plain "send a line" form beside it for keyboards and screen readers.
 */
export const instancePage: Page = (main, id) => {
  const title = h("h1", {}, "Instance");
  const facts = h("dl", { class: "facts" });
  const reason = h("p", { class: "reason", hidden: true });
  const stopBtn = h("button", { type: "button", id: "stop" }, "Stop");
  const removeBtn = h("button", { type: "button", id: "remove", class: "danger" }, "Remove");
  const tag = h("input", {
    id: "snapshot-tag",
    name: "tag",
    required: true,
    placeholder: "demo/vm:snap",
    autocomplete: "off",
  });
  const snapStop = h("input", { id: "snapshot-stop", type: "checkbox" });
  const snapBtn = h("button", { type: "submit", id: "snapshot" }, "Take snapshot");
  const injectDevice = h("select", { id: "inject-device" });
  const injectText = h("input", { id: "inject-text", required: true, autocomplete: "off" });
  const injectOffset = h("input", { id: "inject-offset", type: "number", min: "0", value: "0" });
  const injectFile = h("input", { id: "inject-file", type: "file" });
  const injectForm = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "inject-title",
      hidden: true,
      onsubmit: (ev: Event) => void inject(ev),
    },
    h("h2", { id: "inject-title" }, "Inject into an ivshmem device"),
    h("label", { for: "inject-device" }, "Device"),
    injectDevice,
    h("label", { for: "inject-text" }, "Text (or choose a file)"),
    injectText,
    h("label", { for: "inject-file" }, "File"),
    injectFile,
    h("label", { for: "inject-offset" }, "Offset (bytes)"),
    injectOffset,
    h("button", { type: "submit" }, "Inject"),
  );
  const termBox = h("div", {
    id: "terminal",
    class: "terminal",
    role: "region",
    "aria-label": "Serial console",
  });
  const termStatus = h("p", { id: "console-status", class: "muted", "aria-live": "polite" }, "Connecting…");
  const line = h("input", { id: "console-line", autocomplete: "off", spellcheck: "false" });
  main.append(
    h("p", {}, h("a", { href: "#/instances" }, "← Instances")),
    title,
    reason,
    facts,
    h("div", { class: "toolbar", role: "group", "aria-label": "Actions" }, stopBtn, removeBtn),
    h("h2", {}, "Serial console"),
    termBox,
    termStatus,
    h(
      "form",
      {
        class: "inline",
        onsubmit: (ev: Event) => {
          ev.preventDefault();
          send(`${line.value}\r`);
          line.value = "";
        },
      },
      h("label", { for: "console-line" }, "Send a line"),
      line,
      h("button", { type: "submit" }, "Send"),
    ),
    h(
      "div",
      { class: "cards" },
      h(
        "form",
        { class: "card", "aria-labelledby": "snapshot-title", onsubmit: (ev: Event) => void snapshot(ev) },
        h("h2", { id: "snapshot-title" }, "Snapshot as…"),
        h("label", { for: "snapshot-tag" }, "Reference"),
        tag,
        h("label", { for: "snapshot-stop", class: "check" }, snapStop, " stop the instance afterwards"),
        snapBtn,
      ),
      injectForm,
    ),
  );

  let info: InstanceInfo | undefined;
  const poll = async () => {
    try {
      info = await api<InstanceInfo>("GET", `/status/${encodeURIComponent(id)}`);
    } catch (e) {
      title.textContent = `Instance ${id}`;
      reason.hidden = false;
      reason.textContent = (e as Error).message;
      return;
    }
    const i = info;
    title.replaceChildren(i.name, " ", stateBadge(i.state));
    title.setAttribute("data-state", i.state);
    reason.hidden = !i.reason;
    reason.textContent = i.reason ?? "";
    const cpu = cpuPercent(i);
    const rows: [string, Node | string][] = [
      ["Id", i.instance_id],
      ["Artifact", `${i.artifact.reference} (${i.artifact.digest.slice(0, 19)}…)`],
      ["Accelerator", `${i.accel} · ${i.machine}${i.pid ? ` · pid ${i.pid}` : ""}`],
      ["Uptime", duration(i.metrics.uptime_ms)],
      ["Start / target", startCell(i)],
      [
        "Memory",
        `${bytes(i.metrics.memory_bytes)} guest · ${bytes(i.metrics.rss_bytes)} resident · ${i.metrics.vcpus} vCPU`,
      ],
      ["CPU", cpu === undefined ? "–" : `${cpu.toFixed(0)} % of a core`],
      [
        "Network",
        i.network.mode +
          (i.network.ports.length
            ? ` · ${i.network.ports.map((p) => `${p.host_ip}:${p.host_port}→${p.guest_port}/${p.protocol}`).join(", ")}`
            : ""),
      ],
      [
        "Confinement",
        i.confinement
          ? `${i.confinement.mode}${i.confinement.user ? ` as ${i.confinement.user}` : ""} · seccomp ${i.confinement.seccomp.split(",")[0]}`
          : "–",
      ],
    ];
    facts.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    stopBtn.disabled = !LIVE.has(i.state);
    removeBtn.disabled = !ENDED.has(i.state);
    snapBtn.disabled = !(i.state === "running" || i.state === "paused");
    if (!tag.value)
      tag.value = `${i.artifact.reference.replace(/^docker\.io\//, "").replace(/:[^:/]*$/, "")}:snap-${i.name}`;
    if (i.devices.length && injectDevice.options.length === 0) {
      injectForm.hidden = false;
      injectDevice.replaceChildren(
        ...i.devices.map((d) => h("option", { value: d.name }, `${d.name} (${bytes(d.size)})`)),
      );
    }
  };

  const act = async (btn: HTMLButtonElement, what: string, fn: () => Promise<string>) => {
    btn.disabled = true;
    btn.setAttribute("aria-busy", "true");
    toast(`${what}…`);
    try {
      toast(await fn());
    } catch (e) {
      toast(`${what} failed: ${(e as Error).message}`, "error");
    } finally {
      btn.removeAttribute("aria-busy");
      await poll();
    }
  };
  stopBtn.addEventListener("click", () =>
    act(stopBtn, "Stopping", async () => {
      const r = await api("POST", "/stop", { instance_id: id, timeout_ms: 10000 });
      return `Stop: ${r.status}`;
    }),
  );
  removeBtn.addEventListener("click", () =>
    act(removeBtn, "Removing", async () => {
      await api("DELETE", `/instances/${encodeURIComponent(id)}`);
      location.hash = "#/instances";
      return "Removed";
    }),
  );
  const snapshot = (ev: Event) => {
    ev.preventDefault();
    return act(snapBtn, "Taking a snapshot", async () => {
      const r = await api("POST", "/snapshot", {
        instance_id: id,
        tag: tag.value.trim(),
        stop: snapStop.checked,
      });
      const paused = r.pause_ms !== undefined ? `; guest paused ${r.pause_ms} ms, ${r.pause_mode ?? ""}` : "";
      return `Snapshot stored as ${r.reference} (${bytes(r.size)} of RAM snapshot${paused})`;
    });
  };
  const inject = async (ev: Event) => {
    ev.preventDefault();
    const file = injectFile.files?.[0];
    const data = file ? new Uint8Array(await file.arrayBuffer()) : new TextEncoder().encode(injectText.value);
    let bin = "";
    for (const b of data) bin += String.fromCharCode(b);
    try {
      const r = await api("POST", "/inject", {
        instance_id: id,
        content: {
          mmio: { device: injectDevice.value, offset: Number(injectOffset.value || 0), data: btoa(bin) },
        },
      });
      toast(`Injected ${r.bytes} bytes into ${injectDevice.value}`);
    } catch (e) {
      toast(`Inject failed: ${(e as Error).message}`, "error");
    }
  };
  injectFile.addEventListener("change", () => (injectText.required = !injectFile.files?.length));

  // The terminal: raw console bytes in, keystrokes out.
  const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 5000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(termBox);
  fit.fit();
  const resize = new ResizeObserver(() => fit.fit());
  resize.observe(termBox);
  let ws: WebSocket | undefined;
  let closed = false;
  const send = (data: string) => {
    if (ws?.readyState === WebSocket.OPEN) ws.send(data);
    else toast("The console is not connected", "error");
  };
  const connect = (tail?: number) => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/console/${encodeURIComponent(id)}${tail === undefined ? "" : `?tail=${tail}`}`;
    ws = new WebSocket(url, ["ovms.console.v1", bearerProtocol(token.get() ?? "")]);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => (termStatus.textContent = "Connected: type into the terminal, or send a line below.");
    ws.onmessage = (ev) => term.write(new Uint8Array(ev.data as ArrayBuffer));
    ws.onclose = (ev) => {
      if (closed) return;
      termStatus.textContent =
        ev.code === 1000
          ? "The instance has ended."
          : `Disconnected (${ev.code}${ev.reason ? `: ${ev.reason}` : ""}).`;
      if (ev.code !== 1000 && ev.code !== 4409) setTimeout(() => !closed && connect(0), 3000);
    };
  };
  term.onData((d) => send(d));
  connect();
  void poll();
  const t = setInterval(poll, 2000);
  return () => {
    closed = true;
    clearInterval(t);
    resize.disconnect();
    ws?.close();
    term.dispose();
  };
};
