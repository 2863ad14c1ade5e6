// agentpkg's web interface: copy buttons, and the upload page's resumable upload over the
// registry's tus endpoint (POST /api/v1/uploads, then PATCH chunks), with its progress.
// The session cookie is sent by the browser; the CSRF token comes from the page.
"use strict";

const CHUNK = 8 * 1024 * 1024;

function csrf() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function humanSize(bytes) {
  const units = ["KiB", "MiB", "GiB", "TiB"];
  if (bytes < 1024) return bytes + " B";
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return value.toFixed(1) + " " + units[unit];
}

function humanTime(secs) {
  if (!isFinite(secs)) return "…";
  if (secs < 60) return Math.ceil(secs) + " s";
  const m = Math.floor(secs / 60);
  return m + " min " + Math.round(secs - m * 60) + " s";
}

function b64(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  bytes.forEach((b) => { binary += String.fromCharCode(b); });
  return btoa(binary);
}

function setupCopy() {
  document.querySelectorAll("button.copy").forEach((button) => {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = "Copied";
      } catch (e) {
        const range = document.createRange();
        range.selectNodeContents(source);
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
  });
}

// One request; resolves with the XMLHttpRequest once answered (any status).
function send(method, url, headers, body, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    xhr.setRequestHeader("Tus-Resumable", "1.0.0");
    xhr.setRequestHeader("X-CSRF-Token", csrf());
    Object.entries(headers).forEach(([k, v]) => xhr.setRequestHeader(k, v));
    if (onProgress) xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => resolve(xhr);
    xhr.onerror = () => reject(new Error("the connection to the registry was lost"));
    xhr.send(body);
  });
}

function refusal(xhr) {
  try {
    const error = JSON.parse(xhr.responseText).error;
    if (error && error.message) return error.message + " (" + xhr.status + " " + error.code + ")";
  } catch (e) { /* not JSON */ }
  return "the registry answered " + xhr.status;
}

function setupUpload() {
  const form = document.getElementById("upload");
  if (!form) return;
  const input = document.getElementById("file");
  const drop = document.getElementById("drop");
  const chosen = document.getElementById("chosen");
  const bar = document.getElementById("bar");
  const stats = document.getElementById("stats");
  const result = document.getElementById("result");
  const start = document.getElementById("start");
  const done = document.getElementById("done");
  let file = null;

  const choose = (f) => { file = f; chosen.textContent = f ? f.name + " — " + humanSize(f.size) : ""; };
  input.addEventListener("change", () => choose(input.files[0] || null));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) choose(e.dataTransfer.files[0]);
  });

  const fail = (message) => {
    result.textContent = "Upload refused: " + message;
    result.hidden = false;
    start.disabled = false;
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    result.hidden = true;
    done.hidden = true;
    const field = (id) => document.getElementById(id).value.trim();
    const coords = { name: field("name"), version: field("version"), platform: field("platform"), arch: field("arch") };
    if (!file) { fail("choose a file first"); return; }
    if (!coords.name || !coords.version) { fail("the name and the version are required"); return; }
    start.disabled = true;
    document.getElementById("progress").hidden = false;
    const key = "agentpkg-upload:" + [coords.name, coords.version, coords.platform, coords.arch,
      file.name, file.size, file.lastModified].join("|");
    try {
      let url = localStorage.getItem(key);
      let offset = 0;
      if (url) {
        const head = await send("HEAD", url, {}, null);
        if (head.status === 200) offset = parseInt(head.getResponseHeader("Upload-Offset"), 10) || 0;
        else url = null;
      }
      if (!url) {
        const meta = Object.entries({ ...coords, filename: file.name, description: field("description") })
          .filter(([, v]) => v !== "")
          .map(([k, v]) => k + " " + b64(v)).join(",");
        const created = await send("POST", "/api/v1/uploads", { "Upload-Length": String(file.size), "Upload-Metadata": meta }, null);
        if (created.status !== 201) { fail(refusal(created)); return; }
        url = created.getResponseHeader("Location");
        localStorage.setItem(key, url);
      }
      const began = performance.now();
      const resumedAt = offset;
      const show = (sent) => {
        const pct = file.size ? Math.floor((sent / file.size) * 100) : 100;
        bar.value = pct;
        const secs = (performance.now() - began) / 1000;
        const speed = secs > 0 ? (sent - resumedAt) / secs : 0;
        const left = speed > 0 ? (file.size - sent) / speed : Infinity;
        stats.textContent = pct + " % — " + humanSize(sent) + " of " + humanSize(file.size) +
          " — " + humanSize(speed) + "/s — " + humanTime(left) + " left" +
          (resumedAt > 0 ? " (resumed at " + humanSize(resumedAt) + ")" : "");
      };
      show(offset);
      while (offset < file.size || file.size === 0) {
        const chunk = file.slice(offset, offset + CHUNK);
        const base = offset;
        const patched = await send("PATCH", url,
          { "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" },
          chunk, (loaded) => show(base + loaded));
        if (patched.status !== 204 && patched.status !== 200 && patched.status !== 201) {
          if (patched.status === 404 || patched.status === 410) localStorage.removeItem(key);
          fail(refusal(patched));
          return;
        }
        offset = parseInt(patched.getResponseHeader("Upload-Offset"), 10);
        if (!(offset >= 0)) { fail("the registry did not say how far the upload got"); return; }
        show(offset);
        if (file.size === 0) break;
      }
      localStorage.removeItem(key);
      bar.value = 100;
      stats.textContent = "100 % — " + humanSize(file.size) + " uploaded in " +
        humanTime((performance.now() - began) / 1000);
      const href = "/packages/" + encodeURIComponent(coords.name) + "/" +
        encodeURIComponent(coords.version) + "/" + coords.platform + "/" + coords.arch + "?done=uploaded";
      const link = document.createElement("a");
      link.href = href;
      link.textContent = "Open " + coords.name + " " + coords.version;
      done.replaceChildren("Uploaded. ", link);
      done.hidden = false;
      link.focus();
    } catch (err) {
      fail(err.message + " — upload again with the same file to continue where it stopped");
    }
  });
}

document.addEventListener("DOMContentLoaded", () => { setupCopy(); setupUpload(); });
