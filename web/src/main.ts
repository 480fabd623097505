import { api, setUnauthorizedHandler, token } from "./api.js";
import { h, toast } from "./dom.js";
import { benchPage } from "./pages/bench.js";
import { instancePage } from "./pages/instance.js";
import { instancesPage } from "./pages/instances.js";
import { storePage } from "./pages/store.js";

/** Page draws itself into `main` and answers the function that stops its timers and sockets. */
export type Page = (main: HTMLElement, arg: string) => () => void;

const PAGES: Record<string, { title: string; page: Page }> = {
  instances: { title: "Instances", page: instancesPage },
  instance: { title: "Instance", page: instancePage },
  store: { title: "Store", page: storePage },
  bench: { title: "Benchmarks", page: benchPage },
};

const main = document.getElementById("main")!;
const logout = document.getElementById("logout") as HTMLButtonElement;
let stop: () => void = () => undefined;

/** route draws the page the location's hash names (`#/instance/<id>`); without a token, the login form. */
function route(): void {
  stop();
  stop = () => undefined;
  main.replaceChildren();
  if (!token.get()) return login();
  logout.hidden = false;
  const [, name = "instances", ...rest] = location.hash.split("/");
  const p = PAGES[name] ?? PAGES.instances;
  document.title = `${p.title} · OVMS console`;
  for (const a of document.querySelectorAll<HTMLAnchorElement>("header nav a"))
    a.toggleAttribute(
      "aria-current",
      a.getAttribute("href") === `#/${name === "instance" ? "instances" : name}`,
    );
  stop = p.page(main, decodeURIComponent(rest.join("/")));
  void api("GET", "/version")
    .then(
      (v) =>
        (document.getElementById("daemon")!.textContent =
          `${v.name} ${v.version} · ${v.runtime.name} ${v.runtime.version}`),
    )
    .catch(() => undefined);
}

/** login asks for the daemon's bearer token once and keeps it for this browser session. */
function login(message?: string): void {
  logout.hidden = true;
  document.title = "Log in · OVMS console";
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const error = h("p", { id: "login-error", class: "error", role: "alert" }, message ?? "");
  const form = h(
    "form",
    {
      class: "card login",
      "aria-labelledby": "login-title",
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        const t = input.value.trim();
        try {
          await api("GET", "/version", undefined, t);
          token.set(t);
          route();
        } catch (e) {
          error.textContent = `The daemon refused this token: ${(e as Error).message}`;
          input.setAttribute("aria-invalid", "true");
          input.focus();
        }
      },
    },
    h("h1", { id: "login-title" }, "Log in to ovmd"),
    h(
      "p",
      {},
      "Enter the bearer token the daemon was started with (",
      h("code", {}, "--token"),
      ", ",
      h("code", {}, "OVMD_TOKEN"),
      ", or the file ",
      h("code", {}, "http-token"),
      " in its state folder). It is kept in this tab only.",
    ),
    h("label", { for: "token" }, "Token"),
    input,
    error,
    h("button", { type: "submit" }, "Log in"),
  );
  main.replaceChildren(form);
  input.focus();
}

setUnauthorizedHandler((message) => {
  token.clear();
  stop();
  stop = () => undefined;
  login(`The daemon refused the token: ${message}`);
  toast("Logged out: the token was refused", "error");
});
logout.addEventListener("click", () => {
  token.clear();
  route();
});
window.addEventListener("hashchange", () => {
  route();
  main.focus();
});
route();
