// The API page: curl, OpenAI SDK, grpcurl and Python-client examples, filled in with this
// server's addresses and a model it serves, ready to paste into a terminal.

import { apiKey, call } from "./api.js";
import { byId, el, replace, toast } from "./dom.js";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "0.0.0.0", "::", "[::]", "::1", "[::1]"]);

export function initApiPage() {
  return { show: render };
}

/** Where a browser on another machine reaches the gRPC server: the gateway forwards to
 * `target`; a loopback or wildcard host there means the host this page came from. */
export function grpcAddress(target) {
  const cut = target.lastIndexOf(":");
  const host = target.slice(0, cut);
  const port = target.slice(cut + 1);
  if (LOOPBACK.has(host) && !LOOPBACK.has(location.hostname)) {
    return `${location.hostname}:${port}`;
  }
  return target;
}

async function render() {
  const rest = new URL(".", location.href).href.replace(/\/$/, "");
  let config = { grpc_target: "127.0.0.1:50051", grpc_tls: false };
  try {
    config = await call("GET", "ui/config");
  } catch {
    // an older gateway: assume the defaults of gpt-server
  }
  let model = "gpt";
  try {
    model = (await call("GET", "v1/models")).data[0]?.id || model;
  } catch {
    // listing needs the admin key on a server with keys
  }
  const grpc = grpcAddress(config.grpc_target);
  byId("api-rest").textContent = rest;
  byId("api-grpc").textContent = `${grpc}${config.grpc_tls ? " (TLS)" : ""}`;
  const keyed = Boolean(apiKey());
  byId("api-key-note").textContent = keyed
    ? "This server uses API keys: the examples read yours from NANOLLM_API_KEY " +
      "(export NANOLLM_API_KEY=<your key>)."
    : "No API key is stored in this browser, so the examples send none.";
  replace(byId("api-examples"),
          examples({ rest, grpc, tls: config.grpc_tls, model, keyed }).map(card));
}

function card({ id, title, text, code }) {
  const pre = el("pre", { id, class: "code" }, code);
  return el("div", { class: "panel example" },
    el("div", { class: "row-between" }, el("h3", {}, title),
       el("button", { type: "button", onclick: () => copy(pre) }, "Copy")),
    el("p", { class: "hint" }, text), pre);
}

async function copy(pre) {
  try {
    await navigator.clipboard.writeText(pre.textContent);
  } catch {
    // no clipboard API outside secure contexts: select the text for Ctrl+C
    const range = document.createRange();
    range.selectNodeContents(pre);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    toast("Selected: press Ctrl+C to copy.");
    return;
  }
  toast("Copied.");
}

/** JSON as people write it: `{"a": 1, "b": [2, 3]}`. */
function json(value) {
  if (Array.isArray(value)) return `[${value.map(json).join(", ")}]`;
  if (value && typeof value === "object") {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${json(v)}`)
      .join(", ")}}`;
  }
  return JSON.stringify(value);
}

/** A JSON body inside single quotes for a POSIX shell. */
function shellJson(value) {
  return `'${json(value).replaceAll("'", "'\\''")}'`;
}

function examples({ rest, grpc, tls, model, keyed }) {
  const auth = keyed ? ' \\\n  -H "Authorization: Bearer $NANOLLM_API_KEY"' : "";
  const grpcAuth = keyed ? ' -H "authorization: Bearer $NANOLLM_API_KEY"' : "";
  const pyKey = keyed ? 'os.environ["NANOLLM_API_KEY"]' : '"none"';
  const clientKey = keyed ? ', api_key=os.environ["NANOLLM_API_KEY"]' : "";
  const plaintext = tls ? "" : " -plaintext";
  const chat = { model, messages: [{ role: "user", content: "Hello!" }], max_tokens: 100 };
  const stream = { model, prompt: "ROMEO:", max_tokens: 60, stream: true };
  const grpcBody = { model, prompt: "ROMEO:", sampling: { max_tokens: 60 } };
  return [
    {
      id: "ex-curl", title: "curl",
      text: "A chat completion, then a completion streamed as server-sent events.",
      code: `curl ${rest}/v1/chat/completions${auth} \\\n` +
        `  -H "Content-Type: application/json" \\\n  -d ${shellJson(chat)}\n\n` +
        `curl -N ${rest}/v1/completions${auth} \\\n` +
        `  -H "Content-Type: application/json" \\\n  -d ${shellJson(stream)}\n`,
    },
    {
      id: "ex-openai", title: "OpenAI Python SDK",
      text: "pip install openai; the SDK works unchanged with base_url pointing here.",
      code: [...(keyed ? ["import os", ""] : []), "from openai import OpenAI", "",
        `client = OpenAI(base_url="${rest}/v1", api_key=${pyKey})`,
        "stream = client.chat.completions.create(",
        `    model="${model}",`,
        '    messages=[{"role": "user", "content": "Hello!"}],',
        "    max_tokens=100,",
        "    stream=True,",
        ")",
        "for chunk in stream:",
        "    if chunk.choices:",
        '        print(chunk.choices[0].delta.content or "", end="", flush=True)',
        "print()", ""].join("\n"),
    },
    {
      id: "ex-grpcurl", title: "grpcurl",
      text: "The gRPC services through server reflection: list them, then stream a generation.",
      code: `grpcurl${plaintext}${grpcAuth} ${grpc} list\n\n` +
        `grpcurl${plaintext}${grpcAuth} -d ${shellJson(grpcBody)} \\\n` +
        `  ${grpc} nanollm.v1.GenerateService/StreamGenerate\n`,
    },
    {
      id: "ex-python", title: "Python client (nanollm.client)",
      text: "The typed gRPC client that ships with nanoLLM.",
      code: [...(keyed ? ["import os", ""] : []), "from nanollm.client import Client", "",
        `with Client("${grpc}"${tls ? ", tls=True" : ""}${clientKey}) as client:`,
        `    for message in client.stream("ROMEO:", model="${model}", max_tokens=60):`,
        '        print(message.text, end="", flush=True)',
        "print()", ""].join("\n"),
    },
  ];
}
