// The jobs list: status filter, and for each running job a live progress bar, rate and ETA.
import { api, followJob } from "../api.js";
import { TERMINAL, count, duration, h, percent, progressBar, rate, replace, setProgress, shortId, table, when } from "../dom.js";

const STATUSES = ["scheduled", "queued", "running", "completed", "completed_with_errors", "failed", "cancelled"];
// Browsers keep at most six HTTP/1.1 connections per origin: stream a few jobs live, refresh the rest.
const MAX_STREAMS = 3;
const REFRESH_MS = 5000;

export async function showJobs(main, status, signal) {
  const filter = h(
    "select",
    { id: "status-filter", name: "status" },
    h("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => h("option", { value: s }, label(s))),
  );
  filter.value = status;
  filter.addEventListener("change", () => {
    location.hash = filter.value ? `#/jobs?status=${filter.value}` : "#/jobs";
  });
  const rows = new Map();
  const body = h("tbody");
  const list = table("Bulk actions, newest first", ["Job", "Action", "Status", "Progress", "Rate", "ETA", "Created"], []);
  list.querySelector("table").replaceChild(body, list.querySelector("tbody"));
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Show older jobs");
  const empty = h("p", { hidden: true }, "No jobs yet.");
  const error = h("p", { class: "error", role: "alert" });
  replace(
    main,
    h("h1", { tabindex: "-1" }, "Jobs"),
    h("div", { class: "toolbar" }, h("label", { for: "status-filter" }, "Status"), filter),
    error,
    empty,
    list,
    more,
  );

  const streams = new Set();
  const show = (job, { append = true } = {}) => {
    const existing = rows.get(job.id);
    if (existing) {
      existing.update(job);
      return;
    }
    const row = jobRow(job);
    rows.set(job.id, row);
    if (append) body.append(row.element);
    else body.prepend(row.element);
  };
  const follow = () => {
    for (const [id, row] of rows) {
      if (streams.size >= MAX_STREAMS) return;
      if (TERMINAL.has(row.job.status) || row.job.status === "scheduled" || streams.has(id)) continue;
      streams.add(id);
      followJob(id, (job) => show(job), signal)
        .catch((failure) => { error.textContent = failure.message; })
        .finally(() => streams.delete(id));
    }
  };
  let cursor = null;
  const load = async () => {
    const query = new URLSearchParams({ limit: "25" });
    if (status) query.set("status", status);
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/bulk-actions?${query}`, { signal });
    page.items.forEach((job) => show(job));
    cursor = page.next_cursor;
    more.hidden = cursor === null;
    empty.hidden = rows.size > 0;
    follow();
  };
  more.addEventListener("click", () => load().catch((failure) => { error.textContent = failure.message; }));
  try {
    await load();
  } catch (failure) {
    if (!signal.aborted) error.textContent = `Could not load the jobs: ${failure.message}`;
  }
  // New jobs appear at the top; jobs not streamed live get their counts here.
  const timer = window.setInterval(async () => {
    try {
      const query = new URLSearchParams({ limit: "25" });
      if (status) query.set("status", status);
      const page = await api(`/bulk-actions?${query}`, { signal });
      page.items.slice().reverse().forEach((job) => show(job, { append: false }));
      empty.hidden = rows.size > 0;
      follow();
    } catch {
      // The next tick tries again; a 401 has already signed out.
    }
  }, REFRESH_MS);
  signal.addEventListener("abort", () => window.clearInterval(timer));
}

export function label(status) {
  return status.replaceAll("_", " ");
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, label(status));
}

function jobRow(initial) {
  const status = h("td");
  const bar = progressBar(`Progress of job ${shortId(initial.id)}`, 0);
  const barText = h("span", { class: "bar-text" });
  const speed = h("td");
  const eta = h("td");
  const element = h(
    "tr",
    { dataset: { jobId: initial.id } },
    h("td", {}, h("a", { href: `#/jobs/${initial.id}`, class: "mono" }, shortId(initial.id))),
    h("td", {}, initial.action, initial.dry_run ? h("span", { class: "badge" }, "dry run") : null),
    status,
    h("td", { class: "progress-cell" }, bar, barText),
    speed,
    eta,
    h("td", {}, when(initial.created_at)),
  );
  const row = { element, job: initial };
  row.update = (job) => {
    row.job = job;
    replace(status, statusBadge(job.status));
    setProgress(bar, job.progress);
    const done = job.succeeded + job.failed + job.skipped + job.cancelled;
    barText.textContent = `${percent(job.progress)} · ${count(done)} of ${count(job.total)}`;
    speed.textContent = TERMINAL.has(job.status) ? "—" : rate(job.entities_per_second);
    eta.textContent = TERMINAL.has(job.status) ? "—" : duration(job.eta_seconds);
  };
  row.update(initial);
  return row;
}
