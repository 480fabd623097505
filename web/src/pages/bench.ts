import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LogarithmicScale,
  Title,
  Tooltip,
} from "chart.js";
import { api } from "../api.js";
import { h } from "../dom.js";
import type { Page } from "../main.js";

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  LinearScale,
  LogarithmicScale,
  Legend,
  Title,
  Tooltip,
);

/** View says how to draw one benchmark kind: what names a bar, which numbers, in which unit. */
interface View {
  title: string;
  label: (r: Record<string, unknown>) => string;
  metrics: [key: string, name: string][];
  unit: string;
  log: boolean;
  note: string;
}

const VIEWS: Record<string, View> = {
  restore: {
    title: "Start: cold boot vs restore vs warm pool vs loadvm",
    label: (r) => String(r.name),
    metrics: [
      ["running_p50_ms", "running (p50)"],
      ["output_p50_ms", "first output (p50)"],
      ["ready_p50_ms", "ready for work (p50)"],
    ],
    unit: "ms",
    log: true,
    note: "Lower is better; logarithmic scale. node dist/bench/restore.js",
  },
  boot: {
    title: "Cold boot through the daemon API",
    label: (r) =>
      [
        r.machine,
        r.confine !== undefined ? `confine ${r.confine}` : "",
        r.network ? `network ${r.network}` : "",
      ]
        .filter(Boolean)
        .join(" · "),
    metrics: [
      ["start_call_p50_ms", "start call (p50)"],
      ["first_line_p50_ms", "first console line (p50)"],
      ["ready_p50_ms", "ready (p50)"],
    ],
    unit: "ms",
    log: false,
    note: "Lower is better. node dist/bench/boot.js",
  },
  pull: {
    title: "Pull from a local registry: ovm pull vs skopeo",
    label: (r) => String(r.name),
    metrics: [["mibps", "throughput"]],
    unit: "MiB/s",
    log: false,
    note: "Higher is better. node dist/bench/pull.js",
  },
  push: {
    title: "Push to a local registry: ovm push vs skopeo",
    label: (r) => String(r.name),
    metrics: [["mibps", "throughput"]],
    unit: "MiB/s",
    log: false,
    note: "Higher is better. node dist/bench/push.js",
  },
};

const COLORS = ["#2563eb", "#d97706", "#059669", "#7c3aed"];
const fmt = (v: number, unit: string) => `${v >= 100 ? Math.round(v) : v.toFixed(1)} ${unit}`;

/** benchPage draws the newest result of each benchmark (bench/results/*.json, served read-only by the daemon). */
export const benchPage: Page = (main) => {
  const status = h("p", { class: "muted", "aria-live": "polite" }, "Loading…");
  const grid = h("div", { class: "charts" });
  main.append(h("h1", {}, "Benchmarks"), status, grid);
  const charts: Chart[] = [];
  void (async () => {
    try {
      const data = await api<{ dir: string; latest: Record<string, { file: string; result: any }> }>(
        "GET",
        "/ui-data/bench",
      );
      const kinds = Object.keys(VIEWS).filter((k) => data.latest[k]);
      status.textContent = kinds.length
        ? `Newest results in ${data.dir}`
        : `No benchmark results in ${data.dir}.`;
      for (const kind of kinds) {
        const view = VIEWS[kind];
        const { file, result } = data.latest[kind];
        const rows = (result.results ?? []) as Record<string, unknown>[];
        const metrics = view.metrics.filter(([k]) => rows.some((r) => typeof r[k] === "number"));
        const labels = rows.map(view.label);
        const canvas = h("canvas", {
          role: "img",
          "aria-label": `${view.title}: ${rows.map((r, i) => `${labels[i]} ${metrics.map(([k, n]) => `${n} ${typeof r[k] === "number" ? fmt(r[k] as number, view.unit) : "–"}`).join(", ")}`).join("; ")}`,
        });
        const host = result.host ? `${result.host.cpus} CPUs, ${result.host.cpuModel}` : "";
        grid.append(
          h(
            "figure",
            { class: "card chart", "data-kind": kind },
            h("h2", {}, view.title),
            h("div", { class: "canvas" }, canvas),
            h("figcaption", {}, `${view.note} · ${file}${host ? ` · ${host}` : ""}`),
            h(
              "details",
              {},
              h("summary", {}, "Numbers"),
              h(
                "div",
                { class: "scroll" },
                h(
                  "table",
                  {},
                  h(
                    "thead",
                    {},
                    h(
                      "tr",
                      {},
                      h("th", { scope: "col" }, "Run"),
                      ...metrics.map(([, n]) => h("th", { scope: "col" }, `${n} (${view.unit})`)),
                    ),
                  ),
                  h(
                    "tbody",
                    {},
                    ...rows.map((r, i) =>
                      h(
                        "tr",
                        {},
                        h("th", { scope: "row" }, labels[i]),
                        ...metrics.map(([k]) =>
                          h("td", {}, typeof r[k] === "number" ? fmt(r[k] as number, view.unit) : "–"),
                        ),
                      ),
                    ),
                  ),
                ),
              ),
            ),
          ),
        );
        charts.push(
          new Chart(canvas, {
            type: "bar",
            data: {
              labels,
              datasets: metrics.map(([k, n], i) => ({
                label: n,
                data: rows.map((r) => (typeof r[k] === "number" ? (r[k] as number) : null)),
                backgroundColor: COLORS[i % COLORS.length],
              })),
            },
            options: {
              responsive: true,
              maintainAspectRatio: false,
              animation: false,
              indexAxis: "y",
              scales: {
                x: { type: view.log ? "logarithmic" : "linear", title: { display: true, text: view.unit } },
              },
              plugins: { legend: { position: "bottom" } },
            },
          }),
        );
      }
    } catch (e) {
      status.textContent = `Cannot read the benchmark results: ${(e as Error).message}`;
    }
  })();
  return () => charts.forEach((c) => c.destroy());
};
