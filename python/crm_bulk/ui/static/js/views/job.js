// One job: its counts live, throughput and chunk latency, errors by code, the failed entities page by page,
// the error CSV, and (editors) cancel, promote a dry run, retry what failed, revert.
import { api, download, followJob } from "../api.js";
import { throughputChart } from "../chart.js";
import { confirmAction } from "../confirm.js";
import { TERMINAL, announce, count, duration, h, progressBar, rate, replace, setProgress, shortId, table, when } from "../dom.js";
import { allows } from "../session.js";
import { statusBadge } from "./jobs.js";

const COUNTS = ["total", "succeeded", "failed", "skipped", "cancelled"];
const ERRORS_PAGE = 20;
const STATS_REFRESH_MS = 3000;
const SETTLE_ATTEMPTS = 30;

export async function showJob(main, id, signal) {
  let job;
  try {
    job = await api(`/bulk-actions/${id}`, { signal });
  } catch (failure) {
    replace(main, h("h1", { tabindex: "-1" }, "Job not found"), h("p", { class: "error" }, failure.message),
      h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
    return;
  }
  const message = h("p", { class: "error", role: "alert", id: "job-message" });
  const summary = summarySection(job);
  const actions = h("div", { class: "toolbar", id: "job-actions" });
  const stats = h("section", { "aria-labelledby": "stats-heading" }, h("h2", { id: "stats-heading" }, "Statistics"));
  const statsBody = h("div", {}, h("p", {}, "Loading statistics…"));
  stats.append(statsBody);
  const errors = errorsSection(id, message);
  const preview = job.dry_run ? previewSection(id) : null;
  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", shortId(id)),
    h("h1", { tabindex: "-1" }, `Job ${shortId(id)}`),
    message,
    summary.element,
    actions,
    job.mapping_used ? mappingSection(job.mapping_used) : null,
    preview ? preview.element : null,
    stats,
    errors.element,
  );

  const show = (next) => {
    job = next;
    summary.update(job);
    renderActions(actions, job, message, show);
  };
  show(job);
  const refreshStats = async () => {
    try {
      const stats = await api(`/bulk-actions/${id}/stats`, { signal });
      renderStats(statsBody, stats);
      return Object.values(stats.outcomes).reduce((sum, n) => sum + n, 0);
    } catch (failure) {
      if (!signal.aborted) replace(statsBody, h("p", { class: "error" }, `Statistics unavailable: ${failure.message}`));
      return null;
    }
  };
  // The entity log reaches ClickHouse shortly after each chunk: once the job has ended, read the statistics
  // again until they hold every outcome (or a while has passed), then the failed entities.
  const settle = async () => {
    const logged = job.succeeded + job.failed + job.skipped;
    for (let attempt = 0; attempt < SETTLE_ATTEMPTS && !signal.aborted; attempt += 1) {
      if ((await refreshStats()) >= logged) break;
      await new Promise((resolve) => window.setTimeout(resolve, STATS_REFRESH_MS / 2));
    }
    await errors.load();
    if (preview) await preview.load();
  };
  if (TERMINAL.has(job.status)) {
    settle();
    return;
  }
  await refreshStats();
  errors.load();
  if (preview) preview.load();
  const timer = window.setInterval(refreshStats, STATS_REFRESH_MS);
  signal.addEventListener("abort", () => window.clearInterval(timer));
  followJob(id, show, signal)
    .then(async (ended) => {
      window.clearInterval(timer);
      if (!ended) return;
      announce(`Job ${shortId(id)} ${ended.status.replaceAll("_", " ")}`);
      await settle();
    })
    .catch((failure) => { message.textContent = failure.message; });
}

function summarySection(job) {
  const status = h("span", { id: "job-status" });
  const bar = progressBar("Job progress", 0, "job-progress");
  const values = Object.fromEntries(COUNTS.map((name) => [name, h("dd", { dataset: { count: name } })]));
  const speed = h("dd", { id: "job-rate" });
  const eta = h("dd", { id: "job-eta" });
  const times = h("dl", { class: "facts" });
  const element = h(
    "section",
    { "aria-labelledby": "summary-heading", class: "card" },
    h("h2", { id: "summary-heading" }, "Summary"),
    h("p", {}, h("strong", {}, job.action), " · ", status, job.dry_run ? h("span", { class: "badge" }, "dry run") : null,
      job.source_id ? [" · from ", h("a", { href: `#/jobs/${job.source_id}` }, `job ${shortId(job.source_id)}`)] : null),
    h("div", { class: "progress-cell" }, bar),
    h("dl", { class: "counts" }, COUNTS.map((name) => h("div", {}, h("dt", {}, name), values[name]))),
    h("dl", { class: "facts" }, h("div", {}, h("dt", {}, "Rate"), speed), h("div", {}, h("dt", {}, "ETA"), eta)),
    times,
  );
  const update = (next) => {
    replace(status, statusBadge(next.status));
    setProgress(bar, next.progress);
    for (const name of COUNTS) values[name].textContent = count(next[name]);
    speed.textContent = TERMINAL.has(next.status) ? "—" : rate(next.entities_per_second);
    eta.textContent = TERMINAL.has(next.status) ? "—" : duration(next.eta_seconds);
    replace(times, [["Created", next.created_at], ["Scheduled for", next.scheduled_for], ["Started", next.started_at],
      ["Finished", next.finished_at]].filter(([, at]) => at).map(([name, at]) => h("div", {}, h("dt", {}, name), h("dd", {}, when(at)))));
  };
  return { element, update };
}

function renderActions(actions, job, message, show) {
  const buttons = [];
  const ended = TERMINAL.has(job.status);
  const post = (path, { confirm, confirmLabel, done }) => async (event) => {
    const button = event.currentTarget;
    if (confirm && !(await confirmAction(confirm, confirmLabel))) return;
    button.disabled = true;
    message.textContent = "";
    try {
      done(await api(path, { method: "POST", body: path.endsWith("/retry") ? {} : undefined }));
    } catch (failure) {
      message.textContent = failure.message;
      button.disabled = false;
    }
  };
  if (allows("editor")) {
    if (!ended) {
      buttons.push(h("button", { type: "button", class: "danger", id: "cancel-job", onclick: post(`/bulk-actions/${job.id}/cancel`, {
        confirm: `Cancel job ${shortId(job.id)}? Chunks not yet applied will not be.`, confirmLabel: "Cancel the job",
        done: (next) => { show(next); announce(`Job ${shortId(next.id)} ${next.status}`); },
      }) }, "Cancel job"));
    }
    if (job.dry_run && ["completed", "completed_with_errors"].includes(job.status)) {
      buttons.push(h("button", { type: "button", id: "run-job", onclick: post(`/bulk-actions/${job.id}/run`, {
        confirm: "Apply this dry run for real, over the same target?", confirmLabel: "Run it", done: open,
      }) }, "Run for real"));
    }
    if (ended && !job.dry_run && job.failed > 0) {
      buttons.push(h("button", { type: "button", class: "secondary", id: "retry-job", onclick: post(`/bulk-actions/${job.id}/retry`, {
        done: open,
      }) }, "Retry failed"));
    }
    if (ended && !job.dry_run && job.succeeded > 0) {
      buttons.push(h("button", { type: "button", class: "secondary", id: "revert-job", onclick: post(`/bulk-actions/${job.id}/revert`, {
        confirm: "Revert what this job changed? Contacts changed since are left alone.", confirmLabel: "Revert", done: open,
      }) }, "Revert"));
    }
  }
  buttons.push(h("button", { type: "button", class: "secondary", id: "download-errors", onclick: async () => {
    try {
      const size = await download(`/bulk-actions/${job.id}/errors`, "text/csv", `bulk-action-${job.id}-errors.csv`);
      announce(`Error CSV downloaded, ${count(size)} bytes`);
    } catch (failure) {
      message.textContent = failure.message;
    }
  } }, "Download errors (CSV)"));
  replace(actions, buttons);
}

function open(job) {
  location.hash = `#/jobs/${job.id}`;
}

function renderStats(body, stats) {
  const latency = stats.chunk_latency_ms;
  const ms = (v) => (v === null ? "—" : `${v.toFixed(1)} ms`);
  const byCode = Object.entries(stats.errors_by_code);
  const byReason = Object.entries(stats.skipped_by_reason);
  replace(
    body,
    h("h3", {}, "Throughput"),
    stats.throughput.length ? h("figure", {}, throughputChart(stats.throughput),
      h("figcaption", {}, "Entities finished per second")) : h("p", {}, "No outcomes logged yet."),
    h("h3", {}, "Chunk latency"),
    h("dl", { class: "facts", id: "latency" }, ["p50", "p95", "p99"].map((p) => h("div", {}, h("dt", {}, p), h("dd", {}, ms(latency[p]))))),
    h("h3", {}, "Errors by code"),
    byCode.length ? table("Failed entities by error code", ["Code", "Entities"],
      byCode.map(([code, n]) => h("tr", {}, h("td", {}, code), h("td", { class: "num" }, count(n))))) : h("p", {}, "No errors."),
    byReason.length ? [h("h3", {}, "Skipped by reason"), table("Skipped entities by reason", ["Reason", "Entities"],
      byReason.map(([reason, n]) => h("tr", {}, h("td", {}, reason), h("td", { class: "num" }, count(n)))))] : null,
  );
}

function errorsSection(id, message) {
  const body = h("div", { id: "error-table" });
  const pageLabel = h("span", { id: "error-page" });
  const first = h("button", { type: "button", class: "secondary" }, "First page");
  const next = h("button", { type: "button", class: "secondary", id: "errors-next" }, "Next page");
  const element = h(
    "section",
    { "aria-labelledby": "errors-heading" },
    h("h2", { id: "errors-heading" }, "Failed entities"),
    body,
    h("div", { class: "toolbar" }, first, next, pageLabel),
  );
  const cursors = [null];
  let page = 0;
  const load = async () => {
    const query = new URLSearchParams({ outcome: "failed", limit: String(ERRORS_PAGE) });
    if (cursors[page]) query.set("cursor", cursors[page]);
    try {
      const answer = await api(`/bulk-actions/${id}/logs?${query}`);
      cursors[page + 1] = answer.next_cursor;
      replace(body, answer.items.length ? table(`Failed entities, page ${page + 1}`, ["Entity", "Email", "Code", "Message", "At"],
        answer.items.map((item) => h("tr", {}, h("td", { class: "num" }, item.entity_id ?? "—"), h("td", {}, item.email),
          h("td", {}, item.code), h("td", {}, item.message), h("td", {}, when(item.at))))) : h("p", {}, "No failed entities."));
      pageLabel.textContent = `Page ${page + 1}`;
      next.disabled = !answer.next_cursor;
      first.disabled = page === 0;
    } catch (failure) {
      message.textContent = `Could not load the failed entities: ${failure.message}`;
    }
  };
  next.addEventListener("click", () => { page += 1; load(); });
  first.addEventListener("click", () => { page = 0; load(); });
  return { element, load: () => { page = 0; return load(); } };
}

function mappingSection(mapping) {
  return h("section", { "aria-labelledby": "mapping-heading" }, h("h2", { id: "mapping-heading" }, "Columns"),
    table("How the file's columns were read", ["Column", "Field"],
      Object.entries(mapping).map(([header, field]) => h("tr", {}, h("td", {}, header), h("td", {}, field || "left out")))));
}

function previewSection(id) {
  const body = h("div", {}, h("p", {}, "Loading the preview…"));
  const load = () => api(`/bulk-actions/${id}/preview?limit=20`).then((preview) => {
    const json = (o) => (o && Object.keys(o).length ? JSON.stringify(o) : "—");
    replace(body, preview.items.length ? table("What the dry run would change", ["Line", "Entity", "Outcome", "Before", "After"],
      preview.items.map((item) => h("tr", {}, h("td", { class: "num" }, item.line), h("td", { class: "num" }, item.entity_id ?? "new"),
        h("td", {}, item.code), h("td", { class: "mono" }, json(item.before)), h("td", { class: "mono" }, json(item.after)))))
      : h("p", {}, "Nothing in the sample yet."));
  }).catch((failure) => replace(body, h("p", { class: "error" }, `Preview unavailable: ${failure.message}`)));
  const element = h("section", { "aria-labelledby": "preview-heading" }, h("h2", { id: "preview-heading" }, "Dry-run preview"), body);
  return { element, load };
}
