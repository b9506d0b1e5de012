// The call page: getUserMedia -> RTCPeerConnection -> POST /v1/webrtc/calls (non-trickle).
// Plain JS, no dependencies. `?mic=later` starts the call without the microphone; the
// "Microphone on" button (or voicetyped.openMicrophone()) opens it mid-call.
"use strict";

const $ = (id) => document.getElementById(id);
const micLater = new URLSearchParams(location.search).get("mic") === "later";
const RECORD_RATE = 16000;

const state = {
  status: "idle",
  sessionId: null,
  pc: null,
  dtmf: null,
  mic: null,
  audio: null,
  recorded: [],        // Float32Array chunks of the bot's audio at RECORD_RATE
  recordedSamples: 0,
  ended: false,
};

function setStatus(text) {
  state.status = text;
  $("status").textContent = text;
}

async function accessHeaders() {
  const saved = sessionStorage.getItem("voicetyped-access-token");
  return saved ? { Authorization: "Bearer " + saved } : {};
}

async function callToken() {
  let reply = await fetch("/v1/webrtc/tokens", { method: "POST", headers: await accessHeaders() });
  if (reply.status === 401) {
    $("access").hidden = false;
    const given = $("access-token").value.trim();
    if (!given) throw new Error("enter the access token, then press Call");
    sessionStorage.setItem("voicetyped-access-token", given);
    reply = await fetch("/v1/webrtc/tokens", { method: "POST", headers: await accessHeaders() });
  }
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || "could not get a call token");
  return body.token;
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

function record(stream) {
  // Chrome feeds a remote WebRTC stream into WebAudio only while it also plays in an element.
  $("remote").srcObject = stream;
  const context = new AudioContext({ sampleRate: RECORD_RATE });
  const source = context.createMediaStreamSource(stream);
  const tap = context.createScriptProcessor(4096, 1, 1);
  tap.onaudioprocess = (event) => {
    const chunk = new Float32Array(event.inputBuffer.getChannelData(0));
    state.recorded.push(chunk);
    state.recordedSamples += chunk.length;
  };
  source.connect(tap);
  tap.connect(context.destination);
  state.audio = context;
}

async function openMicrophone() {
  if (state.mic) return;
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  state.mic = stream;
  const sender = state.pc && state.pc.getSenders().find((s) => !s.track || s.track.kind === "audio");
  if (sender) await sender.replaceTrack(stream.getAudioTracks()[0]);
  $("microphone").hidden = true;
}

async function call() {
  if (state.pc) return;
  state.ended = false;
  setStatus("calling…");
  $("call").disabled = true;
  try {
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    state.dtmf = pc.createDataChannel("dtmf");
    if (micLater) {
      pc.addTransceiver("audio", { direction: "sendrecv" });
      $("microphone").hidden = false;
    } else {
      state.mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      for (const track of state.mic.getAudioTracks()) pc.addTrack(track, state.mic);
    }
    pc.ontrack = (event) => record(event.streams[0] || new MediaStream([event.track]));
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === "connected") setStatus("in call");
      else if (s === "failed" || s === "closed" || s === "disconnected") ended("call ended (" + s + ")");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const token = await callToken();
    const reply = await fetch("/v1/webrtc/calls", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token, sdp: pc.localDescription.sdp, type: "offer" }),
    });
    const body = await reply.json();
    if (!reply.ok) throw new Error(body.error || "the call was refused");
    state.sessionId = body.session_id;
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    $("hangup").disabled = false;
    setStatus("connecting…");
  } catch (error) {
    ended("error: " + error.message);
  }
}

function ended(text) {
  if (state.ended) return;
  state.ended = true;
  setStatus(text);
  if (state.pc) state.pc.close();
  if (state.mic) state.mic.getTracks().forEach((t) => t.stop());
  state.pc = null;
  state.mic = null;
  $("call").disabled = false;
  $("hangup").disabled = true;
  $("microphone").hidden = true;
}

async function hangUp() {
  const id = state.sessionId;
  ended("hung up");
  if (id) await fetch("/v1/webrtc/calls/" + encodeURIComponent(id), { method: "DELETE" });
}

function press(digit) {
  if (!state.dtmf || state.dtmf.readyState !== "open") return false;
  state.dtmf.send(digit);
  return true;
}

// The bot's audio so far from sample `from`, as base64 little-endian int16 at 16 kHz.
function recorded(from) {
  const all = new Float32Array(state.recordedSamples);
  let at = 0;
  for (const chunk of state.recorded) { all.set(chunk, at); at += chunk.length; }
  const part = all.subarray(from || 0);
  const pcm = new Int16Array(part.length);
  for (let i = 0; i < part.length; i++) pcm[i] = Math.max(-1, Math.min(1, part[i])) * 32767;
  const bytes = new Uint8Array(pcm.buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

$("call").addEventListener("click", call);
$("hangup").addEventListener("click", hangUp);
$("microphone").addEventListener("click", openMicrophone);
$("access").addEventListener("submit", (event) => { event.preventDefault(); call(); });
for (const key of document.querySelectorAll("#keypad button")) {
  key.addEventListener("click", () => press(key.dataset.digit));
}

window.voicetyped = {
  call, hangUp, press, openMicrophone, recorded,
  info: () => ({
    status: state.status, sessionId: state.sessionId, recordedSamples: state.recordedSamples,
    connectionState: state.pc ? state.pc.connectionState : "none",
    dtmf: state.dtmf ? state.dtmf.readyState : "none",
  }),
};
