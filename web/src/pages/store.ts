import type { ArtifactInfo } from "../../../src/api/types.generated.js";
import { api } from "../api.js";
import { bytes, duration, h, toast } from "../dom.js";
import type { Page } from "../main.js";

/** signatureBadge tells what the daemon could say about an artifact's signatures, no more. */
function signatureBadge(a: ArtifactInfo): HTMLElement {
  const s = a.signature;
  const text =
    s.status === "verified"
      ? `signed (${(s.keys ?? []).map((k) => `${k.name} ${k.fingerprint.slice(0, 19)}…`).join(", ")})`
      : s.status === "signed"
        ? `signed, not verified (${s.signatures}; the daemon has no trust policy)`
        : s.status === "invalid"
          ? `signature invalid (${s.signatures}, none verifies with the policy's keys)`
          : "unsigned";
  return h("span", { class: `sig sig-${s.status}` }, text);
}

const short = (ref: string) => ref.replace(/^docker\.io\//, "");

/**
 * storePage lists the store's artifacts (GET /artifacts) with their layers, sizes and
 * signature status, and starts one: "Run" cold-boots it, "Restore" starts a snapshot artifact
 * from its RAM snapshot (the same POST /start; the artifact decides).
 */
export const storePage: Page = (main) => {
  const list = h("div", { class: "cards", id: "artifacts" });
  const status = h("p", { class: "muted", "aria-live": "polite" }, "Loading…");
  main.append(h("h1", {}, "Store"), status, list);
  let n = 0;
  const card = (a: ArtifactInfo) => {
    const k = n++;
    const name = h("input", {
      id: `name-${k}`,
      name: "name",
      autocomplete: "off",
      pattern: "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}",
    });
    const cmdline = h("input", {
      id: `cmdline-${k}`,
      name: "cmdline",
      autocomplete: "off",
      placeholder: "e.g. ovms.mode=console",
    });
    const verb = a.ram_snapshot ? "Restore" : "Run";
    const button = h("button", { type: "submit", "aria-label": `${verb} ${short(a.reference)}` }, verb);
    const start = async (ev: Event) => {
      ev.preventDefault();
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      const overrides: Record<string, string> = {};
      if (name.value.trim()) overrides.name = name.value.trim();
      if (!a.ram_snapshot && cmdline.value.trim()) overrides.cmdline = cmdline.value.trim();
      try {
        const r = await api("POST", "/start", {
          manifest: a.reference,
          ...(Object.keys(overrides).length ? { overrides } : {}),
        });
        toast(`${r.name} is starting`);
        location.hash = `#/instance/${encodeURIComponent(r.instance_id)}`;
      } catch (e) {
        toast(`${verb} failed: ${(e as Error).message}`, "error");
        button.disabled = false;
        button.removeAttribute("aria-busy");
      }
    };
    return h(
      "article",
      { class: "card artifact", "data-reference": short(a.reference), "aria-labelledby": `art-${k}` },
      h(
        "h2",
        { id: `art-${k}` },
        short(a.reference),
        a.ram_snapshot ? h("span", { class: "tag" }, "RAM snapshot") : null,
      ),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Digest"),
        h("dd", { class: "ref" }, a.digest),
        h("dt", {}, "Size"),
        h("dd", {}, bytes(a.size)),
        h("dt", {}, "Resources"),
        h("dd", {}, `${bytes(a.memory_bytes)} · ${a.vcpus ?? "–"} vCPU${a.machine ? ` · ${a.machine}` : ""}`),
        h("dt", {}, "Signature"),
        h("dd", {}, signatureBadge(a)),
        a.created ? [h("dt", {}, "Created"), h("dd", {}, a.created)] : null,
        a.cold_start_target_ms !== undefined
          ? [h("dt", {}, "Start target"), h("dd", {}, duration(a.cold_start_target_ms))]
          : null,
        a.subject ? [h("dt", {}, "Snapshot of"), h("dd", { class: "ref" }, a.subject)] : null,
        a.devices?.length
          ? [
              h("dt", {}, "Devices"),
              h("dd", {}, a.devices.map((d) => `${d.type} ${d.name} ${bytes(d.size)}`).join(", ")),
            ]
          : null,
      ),
      h(
        "details",
        {},
        h("summary", {}, `${a.layers.length} layers`),
        h(
          "div",
          { class: "scroll" },
          h(
            "table",
            {},
            h(
              "thead",
              {},
              h("tr", {}, ...["Role", "Digest", "Size", "Format"].map((c) => h("th", { scope: "col" }, c))),
            ),
            h(
              "tbody",
              {},
              ...a.layers.map((l) =>
                h(
                  "tr",
                  {},
                  h("td", {}, l.role),
                  h("td", { class: "ref", title: l.digest }, l.digest.slice(7, 19) + "…"),
                  h("td", {}, bytes(l.size)),
                  h("td", {}, l.format ?? ""),
                ),
              ),
            ),
          ),
        ),
      ),
      h(
        "form",
        { class: "start", onsubmit: start },
        h("label", { for: `name-${k}` }, "Instance name (optional)"),
        name,
        a.ram_snapshot
          ? null
          : [h("label", { for: `cmdline-${k}` }, "Extra kernel arguments (optional)"), cmdline],
        button,
      ),
    );
  };
  void (async () => {
    try {
      const { artifacts } = await api<{ artifacts: ArtifactInfo[] }>("GET", "/artifacts");
      list.replaceChildren(...artifacts.map(card));
      status.textContent = artifacts.length
        ? `${artifacts.length} artifact(s)`
        : "The store is empty: build one with ovm build, or pull one with ovm pull.";
    } catch (e) {
      status.textContent = `Cannot list the store: ${(e as Error).message}`;
    }
  })();
  return () => undefined;
};
