import type { InstanceInfo } from "../../../src/api/types.generated.js";
import { api } from "../api.js";
import { bytes, duration, h } from "../dom.js";
import type { Page } from "../main.js";

/** cpuPercent is the CPU a VMM used between two polls, in % of one core. */
const cpuSeen = new Map<string, { t: number; cpu: number; pct?: number }>();
export function cpuPercent(i: InstanceInfo): number | undefined {
  const cpu = i.metrics.cpu_time_ms;
  if (cpu === undefined) return undefined;
  const now = performance.now();
  const prev = cpuSeen.get(i.instance_id);
  if (prev && now - prev.t < 500) return prev.pct;
  const pct = prev ? Math.max(0, (100 * (cpu - prev.cpu)) / (now - prev.t)) : undefined;
  cpuSeen.set(i.instance_id, { t: now, cpu, pct });
  return pct;
}

/** startCell shows the start time against the artifact's cold-start target. */
export function startCell(i: InstanceInfo): HTMLElement {
  const ms = i.metrics.start_ms;
  if (ms === undefined) return h("span", {}, "–");
  if (i.cold_start_target_ms === undefined) return h("span", {}, duration(ms));
  return h(
    "span",
    { class: i.met_target ? "ok" : "bad" },
    `${duration(ms)} / ${duration(i.cold_start_target_ms)} `,
    h("span", { class: "sr-only" }, i.met_target ? "(target met)" : "(target missed)"),
    h("span", { "aria-hidden": "true" }, i.met_target ? "✓" : "✗"),
  );
}

export function stateBadge(state: string): HTMLElement {
  return h("span", { class: `state state-${state}` }, state);
}

/** instancesPage lists the instances, polled every 2 s: state, artifact, accelerator, uptime, start time, memory, CPU. */
export const instancesPage: Page = (main) => {
  const all = h("input", { type: "checkbox", id: "show-all" });
  const body = h("tbody");
  const status = h("p", { class: "muted", "aria-live": "polite" });
  main.append(
    h("h1", {}, "Instances"),
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "show-all" }, all, " show exited and failed"),
      h("a", { href: "#/store", class: "button" }, "Start one from the store"),
    ),
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        { id: "instances" },
        h("caption", { class: "sr-only" }, "Instances, updated every 2 seconds"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ...["Name", "State", "Artifact", "Accel", "Uptime", "Start / target", "Memory", "RSS", "CPU"].map(
              (c) => h("th", { scope: "col" }, c),
            ),
          ),
        ),
        body,
      ),
    ),
    status,
  );
  const poll = async () => {
    try {
      const { instances } = await api<{ instances: InstanceInfo[] }>(
        "GET",
        `/instances${all.checked ? "?all=1" : ""}`,
      );
      body.replaceChildren(
        ...instances.map((i) => {
          const cpu = cpuPercent(i);
          return h(
            "tr",
            { "data-name": i.name },
            h(
              "th",
              { scope: "row" },
              h("a", { href: `#/instance/${encodeURIComponent(i.instance_id)}` }, i.name),
            ),
            h("td", {}, stateBadge(i.state)),
            h("td", { class: "ref" }, i.artifact.reference),
            h("td", {}, `${i.accel} · ${i.machine}`),
            h("td", {}, duration(i.metrics.uptime_ms)),
            h("td", {}, startCell(i)),
            h("td", {}, bytes(i.metrics.memory_bytes)),
            h("td", {}, bytes(i.metrics.rss_bytes)),
            h("td", {}, cpu === undefined ? "–" : `${cpu.toFixed(0)} %`),
          );
        }),
      );
      status.textContent = instances.length ? "" : "No instances. Start one from the store.";
    } catch (e) {
      status.textContent = `Cannot list instances: ${(e as Error).message}`;
    }
  };
  all.addEventListener("change", () => void poll());
  void poll();
  const t = setInterval(poll, 2000);
  return () => clearInterval(t);
};
