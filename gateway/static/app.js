// The page shell: hash routes (#playground, #training, #models, #api) and the API key dialog.

import { apiKey, onKeyNeeded, setApiKey } from "./api.js";
import { byId, toast } from "./dom.js";
import { initApiPage } from "./apipage.js";
import { initModels } from "./models.js";
import { initPlayground } from "./playground.js";
import { initTraining } from "./training.js";

// Each page's init runs on its first visit; its `show` (if any) on every visit.
const PAGES = {
  playground: initPlayground,
  training: initTraining,
  models: initModels,
  api: initApiPage,
};
const started = new Map();

function currentPage() {
  const name = location.hash.replace(/^#/, "").split("/")[0];
  return name in PAGES ? name : "playground";
}

function route() {
  const page = currentPage();
  for (const section of document.querySelectorAll(".page")) {
    section.hidden = section.id !== `page-${page}`;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!started.has(page)) started.set(page, PAGES[page]() || {});
  const view = started.get(page);
  if (view.show) view.show(location.hash);
}

// The key dialog: opened by the header button, or by a call that got 401 (then the call is
// retried with the new key once the user saves it). Calls that fail together share one dialog.
let pending = null;

function keyDialog(reason) {
  if (!pending) pending = openKeyDialog(reason).finally(() => { pending = null; });
  return pending;
}

function openKeyDialog(reason) {
  const dialog = byId("key-dialog");
  byId("key-reason").textContent = reason ||
    "Keys are needed only when the server was started with them.";
  const input = byId("key-input");
  input.value = apiKey();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const choice = dialog.returnValue;
      if (choice === "save" && input.value.trim()) {
        setApiKey(input.value.trim());
        toast("API key saved in this browser.");
        resolve(true);
        showAgain();
      } else {
        if (choice === "forget") {
          setApiKey("");
          toast("API key removed from this browser.");
        }
        resolve(false);
      }
      updateKeyButton();
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
}

/** The page shown reads the server again with the new key (the playground's model menu, the
 * API page's examples): what it showed was fetched without it. */
function showAgain() {
  const view = started.get(currentPage());
  if (view?.show) view.show(location.hash);
}

function updateKeyButton() {
  byId("key-button").textContent = apiKey() ? "API key ✓" : "API key";
}

onKeyNeeded((message) => keyDialog(`The server asks for a key: ${message}`));
byId("key-button").addEventListener("click", () => keyDialog(""));
updateKeyButton();
window.addEventListener("hashchange", route);
route();
