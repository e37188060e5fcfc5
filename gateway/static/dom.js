// Building DOM nodes from data. Text always goes in through textContent (never innerHTML), so
// whatever a model, a job or a server message contains is shown as text and never runs.

/** An element: el("td", {class: "num", "data-label": "Size"}, "1.2M", childNode, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  append(node, ...children);
  return node;
}

/** Appends children; strings and numbers become text nodes. */
export function append(node, ...children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Removes every child of `node` and appends `children` instead. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, ...children);
}

export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`no element #${id}`);
  return node;
}

/** Shows `message` in an error box (hides it for an empty message). */
export function showError(box, message) {
  box.textContent = message || "";
  box.hidden = !message;
}

let toastTimer = 0;

/** A short notice at the bottom of the screen. */
export function toast(message) {
  const box = byId("toast");
  box.textContent = message;
  box.classList.add("visible");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("visible"), 4000);
}

/** 1234567 -> "1.23M"; counts of parameters and tokens. */
export function compact(count) {
  const units = [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]];
  for (const [size, unit] of units) {
    if (Math.abs(count) >= size) return `${(count / size).toPrecision(3)}${unit}`;
  }
  return String(count);
}

/** Seconds as "42 s", "3 min 05 s" or "2 h 07 min". */
export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/** "MODEL_STATE_READY" -> "READY" (enum names in protobuf's JSON mapping). */
export function enumLabel(name, prefix) {
  return String(name || "").replace(prefix, "") || "UNKNOWN";
}
