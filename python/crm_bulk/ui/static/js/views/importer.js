// Import: pick or drop a file, check how its columns map (POST /bulk-actions/import/preview on its first
// bytes), then upload it whole with a progress bar (XMLHttpRequest upload progress) and open the new job.
import { postBytes, upload } from "../api.js";
import { announce, count, h, progressBar, replace, setProgress, table } from "../dom.js";
import { allows } from "../session.js";

const FIELDS = ["email", "first_name", "last_name", "phone", "company", "job_title", "tags"];
const SAMPLE_BYTES = 64 * 1024;
const XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

export function contentTypeOf(file) {
  const name = file.name.toLowerCase();
  if (name.endsWith(".xlsx")) return XLSX;
  if (name.endsWith(".ndjson") || name.endsWith(".jsonl")) return "application/x-ndjson";
  return "text/csv";
}

export async function showImport(main, signal) {
  if (!allows("editor")) {
    replace(main, h("h1", { tabindex: "-1" }, "Import contacts"), h("p", {}, "Importing needs the editor or admin role."));
    return;
  }
  const state = { file: null, mapping: null, focus: null };
  const message = h("p", { class: "error", role: "alert", id: "import-message" });
  const input = h("input", { type: "file", id: "import-file", accept: ".csv,.tsv,.txt,.ndjson,.jsonl,.xlsx" });
  const zone = h(
    "div",
    { class: "drop-zone", id: "drop-zone" },
    h("label", { for: "import-file" }, "Choose a CSV, NDJSON or XLSX file"),
    input,
    h("p", { class: "hint" }, "or drop it here"),
  );
  const onDuplicate = h("select", { id: "on-duplicate" }, h("option", { value: "skip" }, "skip it"), h("option", { value: "update" }, "update it"));
  const unknown = h(
    "select",
    { id: "unknown-columns" },
    h("option", { value: "custom_fields" }, "keep as custom fields"),
    h("option", { value: "ignore" }, "leave out"),
    h("option", { value: "reject" }, "refuse the file"),
  );
  const dryRun = h("input", { type: "checkbox", id: "dry-run" });
  const previewBox = h("section", { "aria-labelledby": "preview-heading", id: "import-preview", hidden: true },
    h("h2", { id: "preview-heading" }, "Columns and first rows"));
  const previewBody = h("div");
  previewBox.append(previewBody);
  const start = h("button", { type: "button", id: "start-import", disabled: true }, "Import");
  const bar = progressBar("Upload progress", 0, "upload-progress");
  const barText = h("span", { class: "bar-text", id: "upload-text" }, "Nothing sent yet");
  replace(
    main,
    h("h1", { tabindex: "-1" }, "Import contacts"),
    message,
    zone,
    h("div", { class: "options" },
      h("div", { class: "field" }, h("label", { for: "on-duplicate" }, "When a row's email exists"), onDuplicate),
      h("div", { class: "field" }, h("label", { for: "unknown-columns" }, "Columns matching no field"), unknown),
      h("div", { class: "field check" }, dryRun, h("label", { for: "dry-run" }, "Dry run (apply nothing, show what would change)"))),
    previewBox,
    h("div", { class: "toolbar" }, start),
    h("div", { class: "progress-cell" }, bar, barText),
  );

  const params = () => {
    const query = new URLSearchParams({ unknown_columns: unknown.value });
    if (state.mapping) query.set("mapping", JSON.stringify(state.mapping));
    return query;
  };
  const preview = async () => {
    if (!state.file) return;
    message.textContent = "";
    const type = contentTypeOf(state.file);
    // A text file's first bytes are enough; a workbook can only be read whole.
    const sample = type === XLSX ? state.file : state.file.slice(0, SAMPLE_BYTES);
    try {
      const answer = await postBytes(`/bulk-actions/import/preview?${params()}`, sample, type);
      renderPreview(previewBody, answer, (header, field) => {
        state.mapping = { ...answer.mapping, [header]: field };
        for (const [key, value] of Object.entries(state.mapping)) state.mapping[key] = value || null;
        state.focus = header;
        preview();
      });
      // The table was drawn again: keep a keyboard user on the column they just changed.
      if (state.focus) {
        const again = [...previewBody.querySelectorAll("select")].find((s) => s.dataset.header === state.focus);
        if (again) again.focus();
        state.focus = null;
      }
      previewBox.hidden = false;
      start.disabled = false;
      announce(`Preview ready: ${answer.rows.length} rows shown`);
    } catch (failure) {
      message.textContent = `The file cannot be imported as it is: ${failure.message}`;
      start.disabled = true;
    }
  };
  const choose = (file) => {
    state.file = file;
    state.mapping = null;
    setProgress(bar, 0);
    barText.textContent = `${file.name}: ${count(file.size)} bytes, not sent yet`;
    preview();
  };
  input.addEventListener("change", () => { if (input.files.length) choose(input.files[0]); });
  unknown.addEventListener("change", preview);
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) choose(event.dataTransfer.files[0]);
  });
  start.addEventListener("click", async () => {
    start.disabled = true;
    message.textContent = "";
    const query = params();
    query.set("on_duplicate", onDuplicate.value);
    if (dryRun.checked) query.set("dry_run", "true");
    try {
      const job = await upload(`/bulk-actions/import?${query}`, state.file, contentTypeOf(state.file), (sent, total) => {
        setProgress(bar, total ? sent / total : 1);
        barText.textContent = `${Math.round((sent / total) * 100)} % · ${count(sent)} of ${count(total)} bytes`;
      });
      announce("Upload complete, opening the job");
      if (!signal.aborted) location.hash = `#/jobs/${job.id}`;
    } catch (failure) {
      message.textContent = `The upload failed: ${failure.message}`;
      start.disabled = false;
    }
  });
}

function fieldSelect(header, current) {
  const options = [...FIELDS];
  const custom = `custom_fields.${header.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_|_$/g, "")}`;
  if (!options.includes(custom)) options.push(custom);
  if (current && !options.includes(current)) options.push(current);
  const select = h("select", { "aria-label": `Field for column ${header}`, dataset: { header } },
    options.map((field) => h("option", { value: field }, field)), h("option", { value: "" }, "leave out"));
  select.value = current || "";
  return select;
}

function renderPreview(body, answer, remap) {
  const format = answer.format;
  const rows = answer.rows.map((row) => {
    const problems = row.errors.map((e) => `${e.column || e.field}: ${e.message}`).join("; ");
    return h("tr", { class: problems ? "has-error" : null }, h("td", { class: "num" }, row.line),
      h("td", {}, row.record.email ?? "—"), h("td", {}, problems || "ok"));
  });
  const mapping = Object.entries(answer.mapping).map(([header, field]) => {
    const select = fieldSelect(header, field);
    select.addEventListener("change", () => remap(header, select.value));
    return h("tr", {}, h("td", {}, header), h("td", {}, select));
  });
  replace(
    body,
    h("p", {}, `Read as ${format.kind.toUpperCase()}`, format.delimiter ? `, delimiter “${format.delimiter === "\t" ? "tab" : format.delimiter}”` : "",
      format.encoding ? `, ${format.encoding}` : "", "."),
    answer.unknown_columns.length ? h("p", {}, `Columns matching no field: ${answer.unknown_columns.join(", ")}`) : null,
    table("Column mapping", ["Column", "Field"], mapping),
    table("First rows as they would be stored", ["Line", "Email", "Problems"], rows),
  );
}
