// The dashboard's entry point: sign-in gate, navigation, and the router over the URL's fragment.
import { api, setToken, signedIn, whenSignedOut } from "./api.js";
import { announce, h, replace } from "./dom.js";
import { allows, session } from "./session.js";
import { showAccount } from "./views/account.js";
import { showImport } from "./views/importer.js";
import { showJob } from "./views/job.js";
import { showJobs } from "./views/jobs.js";
import { showLogin } from "./views/login.js";

const main = document.getElementById("main");
let leaving = new AbortController(); // aborts the streams and timers of the view being left

const ROUTES = [
  [/^#\/jobs\/([0-9a-f-]{36})$/, (match, signal) => showJob(main, match[1], signal)],
  [/^#\/import$/, (_, signal) => showImport(main, signal)],
  [/^#\/account$/, (_, signal) => showAccount(main, signal)],
  [/^#\/jobs(?:\?status=(\w+))?$/, (match, signal) => showJobs(main, match[1] || "", signal)],
];

function showNavigation() {
  const nav = document.getElementById("nav");
  const account = session.account;
  nav.hidden = account === null;
  document.getElementById("session").hidden = account === null;
  for (const link of nav.querySelectorAll("[data-needs]")) {
    link.parentElement.hidden = !allows(link.dataset.needs);
  }
  const route = (location.hash.match(/^#\/(\w+)/) || [])[1] || "jobs";
  for (const link of nav.querySelectorAll("[data-route]")) {
    if (link.dataset.route === route) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const who = account ? `${account.name} · ${account.role}` : "";
  document.getElementById("whoami").textContent = who;
}

async function route() {
  leaving.abort();
  leaving = new AbortController();
  showNavigation();
  if (!signedIn()) {
    showLogin(main, signIn);
    return;
  }
  const hash = location.hash || "#/jobs";
  for (const [pattern, show] of ROUTES) {
    const match = hash.match(pattern);
    if (match) {
      await show(match, leaving.signal);
      focusHeading();
      return;
    }
  }
  replace(main, h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
  focusHeading();
}

function focusHeading() {
  const heading = main.querySelector("h1");
  if (heading) {
    document.title = `${heading.textContent} · crm-bulk`;
    heading.focus();
  }
}

async function signIn(accessToken) {
  setToken(accessToken);
  session.account = await api("/accounts/me");
  announce(`Signed in to ${session.account.name} as ${session.account.role}`);
  await route();
}

function signOut(message) {
  setToken(null);
  session.account = null;
  route();
  if (message) announce(message);
}

whenSignedOut((message) => signOut(`Signed out: ${message}`));
document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out"));
// The skip link moves focus without changing the fragment the router reads.
document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#/")) route();
});
route();
