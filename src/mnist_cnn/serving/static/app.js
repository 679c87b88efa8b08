// Drawing pad -> POST /api/predict (multipart PNG) -> digit, probability bars, 28x28 preview.
// Pointer Events cover mouse, pen and touch; predictions run live while drawing (debounced),
// one request in flight at a time, and a stale answer never overwrites a newer drawing's.
// Probabilities are the model's calibrated ones; an answer the server marks "unsure" (below
// min_confidence: the page's ?min_confidence=P, else the server's default) names the top two.
// "Read a number from a photo" -> POST /api/read -> the string in large type, its probability,
// "unsure" and why, and the photo with a box over each digit (positioned in % of the image's
// size, so the boxes follow the photo's displayed size), each with its digit and probability.
"use strict";

(() => {
  const SIZE = 280;          // logical canvas size (CSS px); the backing store scales with devicePixelRatio
  const SEND = 140;          // side of the PNG sent to the server
  const DEBOUNCE_MS = 150;   // pause in drawing before a live prediction is sent
  const $ = (id) => document.getElementById(id);
  const pad = $("pad"), ctx = pad.getContext("2d");
  const ui = {
    digit: $("digit"), confidence: $("confidence"), preview: $("preview"), status: $("status"),
    bars: $("bars"), hint: $("hint"), model: $("model"), brush: $("brush"), unsure: $("unsure"),
  };
  // ?min_confidence=P on the page's URL is passed on to the API (it validates it)
  const minConfidence = new URLSearchParams(window.location.search).get("min_confidence");
  const PREDICT_URL = "/api/predict" + (minConfidence === null ? "" : "?min_confidence=" + encodeURIComponent(minConfidence));

  let classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
  let drawing = false, last = null, dirty = false, empty = true;
  let timer = 0, inFlight = false, pending = false, seq = 0, shown = 0;

  // ------------------------------------------------------------------ canvas
  function resetCanvas() {
    const dpr = Math.max(1, Math.min(3, window.devicePixelRatio || 1));
    pad.width = SIZE * dpr;
    pad.height = SIZE * dpr;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#000";                       // MNIST-like: white ink on black
    ctx.fillRect(0, 0, SIZE, SIZE);
    ctx.strokeStyle = ctx.fillStyle = "#fff";
    ctx.lineCap = ctx.lineJoin = "round";
    empty = true;
    ui.hint.hidden = false;
  }

  function point(ev) {
    const r = pad.getBoundingClientRect();
    return { x: (ev.clientX - r.left) * SIZE / r.width, y: (ev.clientY - r.top) * SIZE / r.height };
  }

  function width(ev) {
    const base = Number(ui.brush.value);
    // pens report pressure; mouse reports 0.5 while pressed; touch often 0 or 1: keep those at base
    return ev.pointerType === "pen" && ev.pressure > 0 ? base * (0.55 + 0.9 * ev.pressure) : base;
  }

  function dot(p, w) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, w / 2, 0, Math.PI * 2);
    ctx.fill();
  }

  pad.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0 && ev.pointerType === "mouse") return;
    ev.preventDefault();
    if (pad.dataset.mode === "photo") { clearAll(); }
    pad.setPointerCapture(ev.pointerId);
    drawing = true;
    last = point(ev);
    dot(last, width(ev));
    markDrawn();
  });

  pad.addEventListener("pointermove", (ev) => {
    if (!drawing) return;
    ev.preventDefault();
    const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
    for (const e of (events.length ? events : [ev])) {
      const p = point(e);
      ctx.lineWidth = width(e);
      ctx.beginPath();
      ctx.moveTo(last.x, last.y);
      ctx.lineTo(p.x, p.y);
      ctx.stroke();
      last = p;
    }
    markDrawn();
  });

  const endStroke = () => {
    if (!drawing) return;
    drawing = false;
    last = null;
    schedule(0);                                  // stroke finished: predict now
  };
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  pad.addEventListener("lostpointercapture", endStroke);

  function markDrawn() {
    empty = false;
    dirty = true;
    ui.hint.hidden = true;
    schedule(DEBOUNCE_MS);
  }

  // ------------------------------------------------------------------ prediction requests
  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(send, delay);
  }

  function canvasBlob() {
    // send a 140x140 PNG whatever the screen density: the same for every device, plenty for a
    // 20-px digit, and preprocessing it costs a quarter of a 280x280 (faster live answers)
    const out = document.createElement("canvas");
    out.width = out.height = SEND;
    out.getContext("2d").drawImage(pad, 0, 0, SEND, SEND);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  async function send() {
    if (!dirty || empty) return;
    if (inFlight) { pending = true; return; }     // resend once the current answer is back
    dirty = false;
    inFlight = true;
    const id = ++seq;
    try {
      await post(await canvasBlob(), "drawing.png", id);
    } finally {
      inFlight = false;
      if (pending) { pending = false; send(); }
    }
  }

  async function post(blob, name, id) {
    const body = new FormData();
    body.append("file", blob, name);
    let res, data;
    try {
      res = await fetch(PREDICT_URL, { method: "POST", body });
      data = await res.json();
    } catch (err) {
      if (id >= shown) setStatus("Cannot reach the server: " + err.message, true);
      return;
    }
    if (id < shown || (pad.dataset.mode !== "photo" && empty)) return;  // stale or cleared meanwhile
    shown = id;
    if (!res.ok) {
      showNothing();
      setStatus(data.error || ("Request failed (" + res.status + ")"), true);
      return;
    }
    showAnswer(data);
  }

  // ------------------------------------------------------------------ results
  function buildBars() {
    ui.bars.replaceChildren(...classes.map((c) => {
      const li = document.createElement("li");
      li.innerHTML = '<span class="lbl"></span><span class="track"><span class="fill"></span></span><span class="pct">0%</span>';
      li.querySelector(".lbl").textContent = c;
      return li;
    }));
  }

  function topTwo(a) {
    const order = a.probabilities.map((p, i) => [p, i]).sort((x, y) => y[0] - x[0]);
    return order.slice(0, 2).map(([, i]) => classes[i] !== undefined ? classes[i] : String(i));
  }

  function showAnswer(a) {
    const unsure = a.unsure === true;
    ui.digit.textContent = unsure ? "?" : a.label;
    ui.digit.classList.toggle("unsure", unsure);
    ui.confidence.textContent = (unsure ? "only " : "") + (100 * a.probability).toFixed(1) + "% sure";
    ui.unsure.hidden = !unsure;
    if (unsure) {
      const [first, second] = topTwo(a);
      ui.unsure.textContent = "not sure — is it a " + first + " or a " + second + "?";
    }
    ui.preview.src = a.preprocessed;
    ui.preview.classList.add("on");
    a.probabilities.forEach((p, i) => {
      const li = ui.bars.children[i];
      if (!li) return;
      li.querySelector(".fill").style.width = (100 * p).toFixed(1) + "%";
      li.querySelector(".pct").textContent = (100 * p < 0.1 ? "<0.1" : (100 * p).toFixed(1)) + "%";
      li.classList.toggle("best", i === a.digit);
    });
    setStatus(a.latency_ms.toFixed(1) + " ms on the server", false);
  }

  function showNothing() {
    ui.digit.textContent = "–";
    ui.digit.classList.remove("unsure");
    ui.unsure.hidden = true;
    ui.unsure.textContent = "";
    ui.confidence.innerHTML = "&nbsp;";
    ui.preview.removeAttribute("src");
    ui.preview.classList.remove("on");
    for (const li of ui.bars.children) {
      li.querySelector(".fill").style.width = "0";
      li.querySelector(".pct").textContent = "0%";
      li.classList.remove("best");
    }
  }

  function setStatus(text, isError) {
    ui.status.textContent = text;
    ui.status.classList.toggle("error", !!isError);
  }

  function clearAll() {
    clearTimeout(timer);
    seq++; shown = seq;                           // answers still on the way are now stale
    dirty = false;
    pad.dataset.mode = "draw";
    resetCanvas();
    showNothing();
    setStatus("", false);
  }

  // ------------------------------------------------------------------ upload a photo or take one
  async function photoChosen(ev) {
    const file = ev.target.files[0];
    ev.target.value = "";
    if (!file) return;
    clearAll();
    pad.dataset.mode = "photo";
    ui.hint.hidden = true;
    try {                                         // show the photo on the pad (fit inside, centred)
      const bmp = await createImageBitmap(file);
      const s = Math.min(SIZE / bmp.width, SIZE / bmp.height);
      const w = bmp.width * s, h = bmp.height * s;
      ctx.drawImage(bmp, (SIZE - w) / 2, (SIZE - h) / 2, w, h);
    } catch (_) { /* the browser cannot show it; the server may still read it */ }
    setStatus("Reading " + file.name + "…", false);
    await post(file, file.name, ++seq);
  }
  $("upload").addEventListener("change", photoChosen);
  $("camera").addEventListener("change", photoChosen);   // capture="environment": the phone's back camera

  // ------------------------------------------------------------------ read a number from a photo
  const READ_URL = "/api/read" + (minConfidence === null ? "" : "?min_confidence=" + encodeURIComponent(minConfidence));
  const rd = {
    reading: $("reading"), number: $("read-number"), prob: $("read-prob"), unsure: $("read-unsure"),
    alts: $("read-alts"), photo: $("read-photo"), img: $("read-img"), boxes: $("read-boxes"), status: $("read-status"),
  };
  let readSeq = 0, photoUrl = null;
  const pct = (p) => (100 * p < 0.1 ? "<0.1" : (100 * p).toFixed(1)) + "%";
  const oneLine = (text) => String(text).split("\n")[0];

  function readStatus(text, isError) {
    rd.status.textContent = text;
    rd.status.classList.toggle("error", !!isError);
  }

  async function readChosen(ev) {
    const file = ev.target.files[0];
    ev.target.value = "";
    if (!file) return;
    const id = ++readSeq;
    rd.reading.hidden = true;
    rd.boxes.replaceChildren();
    readStatus("Reading " + file.name + "…", false);
    const body = new FormData();
    body.append("file", file, file.name);
    let res, data = null;
    try {
      res = await fetch(READ_URL, { method: "POST", body });
    } catch (err) {
      if (id === readSeq) readStatus("Cannot reach the server: " + err.message, true);
      return;
    }
    try { data = await res.json(); } catch (_) { /* not JSON: a proxy's error page */ }
    if (id !== readSeq) return;                   // another photo was chosen meanwhile
    if (!res.ok || !data) {
      readStatus(oneLine((data && data.error) || ("Request failed (" + res.status + ")")), true);
      return;
    }
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(file);
    rd.img.src = photoUrl;
    showReading(data);
  }

  function place(el, box, w, h) {                 // a box in image pixels -> % of the displayed photo
    const [l, t, r, b] = box;
    el.style.left = (100 * l / w) + "%";
    el.style.top = (100 * t / h) + "%";
    el.style.width = (100 * (r - l) / w) + "%";
    el.style.height = (100 * (b - t) / h) + "%";
    return el;
  }

  function digitBox(d, w, h) {
    const el = document.createElement("div");
    el.className = "read-box" + (d.probability < 0.5 ? " low" : "");
    const tag = document.createElement("span");
    tag.className = "read-tag";
    tag.textContent = d.label + " · " + pct(d.probability);
    el.append(tag);
    el.title = "digit " + d.label + ": " + d.top_k.map((k) => k.label + " " + pct(k.probability)).join(", ");
    return place(el, d.bbox, w, h);
  }

  function showReading(r) {
    const [w, h] = r.size;
    const unsure = r.unsure === true;
    rd.number.textContent = r.number || "(nothing read)";
    rd.number.classList.toggle("unsure", unsure);
    rd.prob.textContent = (unsure ? "only " : "") + pct(r.probability) + " sure";
    rd.unsure.hidden = !unsure;
    rd.unsure.textContent = unsure ? "unsure: " + (r.reason || "low confidence") : "";
    const alts = r.rows.length === 1 ? r.rows[0].alternatives : [];
    rd.alts.textContent = alts.length ? "or: " + alts.map((a) => a.number + " (" + pct(a.probability) + ")").join(", ") : "";
    // the photo at its own aspect ratio, at most 70% of the window's height: the boxes scale with it
    rd.photo.style.aspectRatio = w + " / " + h;
    rd.photo.style.width = "min(100%, " + (70 * w / h).toFixed(3) + "vh)";
    const rows = r.rows.map((row) => {
      const el = document.createElement("div");
      el.className = "read-row";
      return place(el, row.bbox, w, h);
    });
    rd.boxes.replaceChildren(...rows, ...r.digits.map((d) => digitBox(d, w, h)));
    rd.reading.hidden = false;
    const n = r.digits.length;
    readStatus(n + (n === 1 ? " digit" : " digits") + " · " + r.latency_ms.toFixed(0) + " ms on the server · " + r.model_id, false);
  }
  $("read-upload").addEventListener("change", readChosen);

  // ------------------------------------------------------------------ start
  $("clear").addEventListener("click", clearAll);
  document.addEventListener("keydown", (ev) => {
    if ((ev.key === "Escape" || ev.key === "Delete") && !ev.target.closest("input")) clearAll();
  });

  fetch("/api/model").then((r) => r.json()).then((m) => {
    if (Array.isArray(m.classes) && m.classes.length) { classes = m.classes; buildBars(); }
    const acc = typeof m.accuracy === "number" ? ` · test accuracy ${(100 * m.accuracy).toFixed(2)}%` : "";
    const params = typeof m.params === "number" ? ` · ${m.params.toLocaleString()} parameters` : "";
    const name = m.name || (m.arch && m.arch.name) || m.arch || "?";
    ui.model.textContent = `Model ${name}${params}${acc} · ${m.backend || ""}`;
    ui.model.title = "model id " + m.model_id;
  }).catch(() => { ui.model.textContent = "model info unavailable"; });

  buildBars();
  resetCanvas();
  pad.dataset.mode = "draw";
})();
