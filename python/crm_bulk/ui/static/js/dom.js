// Small DOM helpers: elements built from data (never from HTML strings), formatting of counts and times.

/**
 * An element: `h("button", {type: "button", onclick: f}, "Cancel")`. Attributes named `on…` become listeners,
 * `dataset` and `hidden` are set as properties; children are nodes or text (null and false are left out).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "value" || name === "checked" || name === "hidden") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table in a scrolling region that keyboard users can reach (it may be wider than a phone). */
export function table(caption, headers, rows) {
  const head = h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text))));
  const body = h("tbody", {}, rows);
  const t = h("table", {}, h("caption", {}, caption), head, body);
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption }, t);
}

const integer = new Intl.NumberFormat("en");
const decimal = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });

export function count(n) {
  return n === null || n === undefined ? "—" : integer.format(n);
}

export function rate(perSecond) {
  return perSecond ? `${decimal.format(perSecond)}/s` : "—";
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function when(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" });
}

export function percent(fraction) {
  return `${Math.round((fraction || 0) * 100)} %`;
}

/** Tell screen reader users what just happened (a live region). */
export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  window.setTimeout(() => { region.textContent = text; }, 50);
}

/** A progress bar with its label: a native <progress>, so assistive technology reads its value. */
export function progressBar(label, fraction, id) {
  const bar = h("progress", { max: "100", id, "aria-label": label });
  setProgress(bar, fraction);
  return bar;
}

export function setProgress(bar, fraction) {
  const value = Math.round(Math.min(1, Math.max(0, fraction || 0)) * 100);
  bar.value = value;
  bar.textContent = `${value} %`;
  bar.setAttribute("aria-valuetext", `${value} %`);
}

export function shortId(id) {
  return String(id).slice(0, 8);
}

export const TERMINAL = new Set(["completed", "completed_with_errors", "failed", "cancelled"]);
