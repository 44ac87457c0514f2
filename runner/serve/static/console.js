// The console: polls /v1/videos once a second, uploads with the form, shows a finished video.
// Images and downloads go through fetch() so that the API key travels in a header, never a URL.
"use strict";

const POLL_MS = 1000;
const SHOWN_FRAMES = 8;
const SHOWN_DETECTIONS = 200;
const keyRequired = document.body.dataset.keyRequired === "true";
const $ = (selector) => document.querySelector(selector);
let selected = null;
let shownResultOf = null;

function apiKey() {
  return localStorage.getItem("apiKey") || "";
}

function headers() {
  return keyRequired ? { "X-API-Key": apiKey() } : {};
}

async function api(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function when(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}

function progressCell(video) {
  const td = document.createElement("td");
  const total = video.total_frames;
  const percent = total ? Math.min(100, Math.floor((100 * video.answered) / total)) : 0;
  td.innerHTML = `<div class="progress ${video.state}"><div class="meter"><div></div></div>` +
    `<span class="progress-text"></span></div>`;
  td.querySelector(".meter div").style.width = `${percent}%`;
  td.querySelector(".progress-text").textContent = total
    ? `${video.answered}/${total} · ${percent}%`
    : (video.state === "queued" ? "splitting…" : "–");
  return td;
}

function renderVideos(videos) {
  const body = $("#videos tbody");
  body.replaceChildren();
  if (videos.length === 0) {
    body.innerHTML = '<tr class="empty"><td colspan="5">No videos yet: upload one.</td></tr>';
    return;
  }
  for (const video of videos) {
    const row = document.createElement("tr");
    row.dataset.videoId = video.video_id;
    row.dataset.state = video.state;
    if (video.video_id === selected) row.classList.add("selected");
    const state = cell("", "");
    state.innerHTML = `<span class="state ${video.state}"></span>`;
    state.firstChild.textContent = video.state;
    row.append(cell(video.video_id, "id"), state, progressCell(video), cell(String(video.errors)),
      cell(when(video.created_at)));
    row.addEventListener("click", () => select(video.video_id));
    body.append(row);
  }
}

async function refresh() {
  if (keyRequired && !apiKey()) {
    $("#upload-message").textContent = "Enter an API key above.";
    return;
  }
  try {
    const state = $("#state-filter").value;
    const videos = await (await api(`/v1/videos${state ? `?state=${state}` : ""}`)).json();
    renderVideos(videos);
    const current = videos.find((v) => v.video_id === selected);
    if (current) showDetail(current);
  } catch (error) {
    $("#upload-message").textContent = `Cannot list videos: ${error.message}`;
  }
}

function showDetail(video) {
  $("#detail").hidden = false;
  $("#detail-title").textContent = video.video_id;
  const fields = {
    state: video.state, frames: video.total_frames ?? "–", answered: video.answered, errors: video.errors,
    priority: video.priority, model: video.model ?? "workers' own", created: when(video.created_at),
    updated: when(video.updated_at),
  };
  const list = $("#detail-fields");
  list.replaceChildren();
  for (const [name, value] of Object.entries(fields)) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = String(value);
    list.append(dt, dd);
  }
  const done = video.state === "completed";
  $("#download-result").disabled = !done;
  $("#download-video").disabled = !done;
  $("#result-view").hidden = !done;
  if (!done) {
    $("#detail-message").textContent = "Results appear here once every frame is answered.";
    $("#frames").replaceChildren();
    $("#detections tbody").replaceChildren();
    shownResultOf = null;
  } else if (shownResultOf !== video.video_id) {
    shownResultOf = video.video_id;
    showResult(video.video_id);
  }
}

function spread(frames, count) {
  // Frames with detections first, spread over the video; then any others to fill the row.
  const pick = (list) => list.length <= count ? list
    : Array.from({ length: count }, (_, i) => list[Math.floor((i * list.length) / count)]);
  const found = pick(frames.filter((f) => f.detections.length > 0));
  return found.length ? found : pick(frames);
}

async function showResult(videoId) {
  $("#detail-message").textContent = "Loading the result…";
  try {
    const document_ = await (await api(`/v1/videos/${videoId}/result`)).json();
    const detections = document_.frames.reduce((n, f) => n + f.detections.length, 0);
    $("#detail-message").textContent =
      `${document_.frames.length} frames, ${detections} detections, ${document_.error_count} errors.`;
    const grid = $("#frames");
    grid.replaceChildren();
    for (const frame of spread(document_.frames, SHOWN_FRAMES)) {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.alt = `frame ${frame.frame_id}`;
      const caption = document.createElement("figcaption");
      caption.textContent = `frame ${frame.frame_id} · ${frame.detections.map((d) => d.class_name).join(", ") || "nothing"}`;
      figure.append(img, caption);
      grid.append(figure);
      api(`/v1/videos/${videoId}/frames/${frame.frame_id}`)
        .then((r) => r.blob())
        .then((blob) => { img.src = URL.createObjectURL(blob); })
        .catch((error) => { caption.textContent = `frame ${frame.frame_id}: ${error.message}`; });
    }
    const body = $("#detections tbody");
    body.replaceChildren();
    const rows = document_.frames.flatMap((f) => f.detections.map((d) => [f, d]));
    for (const [frame, d] of rows.slice(0, SHOWN_DETECTIONS)) {
      const row = document.createElement("tr");
      const time = frame.timestamp_ms == null ? "–" : `${(frame.timestamp_ms / 1000).toFixed(2)} s`;
      row.append(cell(String(frame.frame_id)), cell(time), cell(d.class_name), cell(d.confidence.toFixed(3)),
        cell(d.bbox.map((v) => v.toFixed(1)).join(", "), "id"));
      body.append(row);
    }
    $("#detections-note").textContent = rows.length > SHOWN_DETECTIONS
      ? `First ${SHOWN_DETECTIONS} of ${rows.length} detections; the result JSON has them all.` : "";
  } catch (error) {
    $("#detail-message").textContent = `Cannot load the result: ${error.message}`;
  }
}

function select(videoId) {
  selected = videoId;
  shownResultOf = null;
  refresh();
}

async function download(path, filename) {
  const blob = await (await api(path)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  link.click();
}

function upload(event) {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  for (const [name, value] of [...data.entries()]) {
    if (value === "") data.delete(name);
  }
  const request = new XMLHttpRequest();
  const meter = $("#upload-meter");
  const message = $("#upload-message");
  request.open("POST", "/v1/videos");
  for (const [name, value] of Object.entries(headers())) request.setRequestHeader(name, value);
  request.upload.onprogress = (e) => {
    if (e.lengthComputable) meter.firstElementChild.style.width = `${(100 * e.loaded) / e.total}%`;
  };
  request.onload = () => {
    $("#upload-button").disabled = false;
    meter.hidden = true;
    let body = {};
    try { body = JSON.parse(request.responseText); } catch (_) { /* not JSON */ }
    if (request.status === 202) {
      message.className = "message";
      message.textContent = `Accepted as ${body.video_id}.`;
      form.reset();
      $("#file-name").textContent = "Choose another video";
      select(body.video_id);
    } else {
      message.className = "message error";
      message.textContent = `Upload refused (${request.status}): ${body.detail || request.statusText}`;
    }
  };
  request.onerror = () => {
    $("#upload-button").disabled = false;
    message.className = "message error";
    message.textContent = "Upload failed: the server did not answer.";
  };
  $("#upload-button").disabled = true;
  meter.hidden = false;
  meter.firstElementChild.style.width = "0";
  message.className = "message";
  message.textContent = "Uploading…";
  request.send(data);
}

$("#upload-form").addEventListener("submit", upload);
$("#file").addEventListener("change", (e) => {
  $("#file-name").textContent = e.target.files[0]?.name || "Choose a video";
});
$("#state-filter").addEventListener("change", refresh);
$("#download-result").addEventListener("click", () => download(`/v1/videos/${selected}/result`, `${selected}.json`));
$("#download-video").addEventListener("click", () => download(`/v1/videos/${selected}/annotated.mp4`, `${selected}.mp4`));
if (keyRequired) {
  $("#key-box").hidden = false;
  $("#api-key").value = apiKey();
  $("#api-key").addEventListener("change", (e) => { localStorage.setItem("apiKey", e.target.value); refresh(); });
}
refresh();
setInterval(refresh, POLL_MS);
