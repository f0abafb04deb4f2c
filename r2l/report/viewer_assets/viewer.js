// The r2l viewer: renders an exported r2l student (model.onnx) on this machine with onnxruntime-web (WebAssembly).
//
// scene.json (written by r2l/report/viewer.py) gives the camera; rays are built here exactly as
// r2l.geometry.rays.get_rays builds them (OpenGL camera-to-world, pixel centres at +0.5, directions with camera
// z = -1, not normalised) and the graph maps them to colours. While the camera moves, frames are drawn at
// 1/scene.coarse of the size; when it stops, at full size.
// Test hook: window.r2lViewer = {ready, renderPose(c2w, coarse), pose(), scene, last, frames, error}; a frame's
// numbers (renderPose's value, last): {ms, width, height, coarse, threads}.

import * as ort from './ort.wasm.min.mjs';

const $ = (id) => document.getElementById(id);
let markReady, markFailed;
const hook = {
  ready: new Promise((resolve, reject) => { markReady = resolve; markFailed = reject; }),
  last: null,
  frames: {coarse: 0, full: 0},
};
window.r2lViewer = hook;

// ----------------------------------------------------------------------------- small 3-vector algebra

const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
const scale = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const unit = (a) => scale(a, 1 / Math.max(Math.hypot(a[0], a[1], a[2]), 1e-12));
const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
const column = (m, j) => [m[0][j], m[1][j], m[2][j]];

// A camera-to-world pose (4x4 rows) at `eye` looking at `target`, camera y towards `up`.
function lookAt(eye, target, up) {
  const z = unit(sub(eye, target));
  let x = cross(up, z);
  if (Math.hypot(...x) < 1e-9) x = cross([1, 0, 0], z);
  x = unit(x);
  const y = cross(z, x);
  return [[x[0], y[0], z[0], eye[0]], [x[1], y[1], z[1], eye[1]], [x[2], y[2], z[2], eye[2]], [0, 0, 0, 1]];
}

// ----------------------------------------------------------------------------- rays (r2l.geometry.rays.get_rays)

// World-space rays of an h x w view at pose c2w (4x4 or 3x4 rows): origins and directions, (h * w, 3) row-major.
function poseRays(c2w, h, w, focal) {
  const n = h * w;
  const o = new Float32Array(3 * n), d = new Float32Array(3 * n);
  const f = Math.fround(focal);
  for (let v = 0; v < h; v++) {
    const cy = -Math.fround(Math.fround(v + 0.5 - 0.5 * h) / f);
    for (let u = 0; u < w; u++) {
      const cx = Math.fround(Math.fround(u + 0.5 - 0.5 * w) / f);
      const i = 3 * (v * w + u);
      for (let k = 0; k < 3; k++) {
        o[i + k] = c2w[k][3];
        d[i + k] = cx * c2w[k][0] + cy * c2w[k][1] - c2w[k][2];
      }
    }
  }
  return {o, d, n};
}

// ----------------------------------------------------------------------------- camera controls

// How pointer drags and the wheel move the camera (scene.controls: an orbit or a forward-facing box).
class Controls {
  constructor(controls, start) {
    this.c = controls;
    this.reset(start);
  }

  // Start from the camera position of pose `start` (4x4 rows).
  reset(start) {
    const eye = column(start, 3);
    if (this.c.mode === 'orbit') this.startOrbit(eye);
    else this.p = this.toLocal(eye).map((x, k) => clamp(x, this.c.lo[k], this.c.hi[k]));
  }

  startOrbit(eye) {
    const {target, up, radius_range: range} = this.c;
    const off = sub(eye, target);
    let flat = sub(off, scale(up, dot(off, up)));
    if (Math.hypot(...flat) < 1e-9) flat = cross(up, Math.abs(up[0]) < 0.9 ? [1, 0, 0] : [0, 1, 0]);
    this.a = unit(flat);
    this.b = cross(up, this.a);
    this.az = 0;
    this.el = Math.asin(clamp(dot(unit(off), up), -1, 1));
    this.radius = clamp(Math.hypot(...off), range[0], range[1]);
  }

  toLocal(eye) {
    const rel = sub(eye, this.c.origin);
    return [0, 1, 2].map((k) => dot(rel, column(this.c.basis, k)));
  }

  // The pose now (4x4 rows).
  pose() {
    const {target, up} = this.c;
    if (this.c.mode === 'orbit') {
      const round = add(scale(this.a, Math.cos(this.az)), scale(this.b, Math.sin(this.az)));
      const dir = add(scale(round, Math.cos(this.el)), scale(up, Math.sin(this.el)));
      return lookAt(add(target, scale(dir, this.radius)), target, up);
    }
    const m = this.c.basis;
    const p = this.p;
    const eye = [0, 1, 2].map((i) => this.c.origin[i] + m[i][0] * p[0] + m[i][1] * p[1] + m[i][2] * p[2]);
    return lookAt(eye, target, up);
  }

  // A drag of (dx, dy) in units of the canvas's displayed width and height.
  drag(dx, dy) {
    if (this.c.mode === 'orbit') {
      this.az -= Math.PI * dx;
      this.el = clamp(this.el + 0.5 * Math.PI * dy, -1.45, 1.45);
      return;
    }
    const {lo, hi} = this.c;
    this.p[0] = clamp(this.p[0] - dx * (hi[0] - lo[0]), lo[0], hi[0]);
    this.p[1] = clamp(this.p[1] + dy * (hi[1] - lo[1]), lo[1], hi[1]);
  }

  // A wheel turn of `steps` notches (positive: away from the scene).
  zoom(steps) {
    if (this.c.mode === 'orbit') {
      const [lo, hi] = this.c.radius_range;
      this.radius = clamp(this.radius * Math.exp(0.1 * steps), lo, hi);
      return;
    }
    const {lo, hi} = this.c;
    this.p[2] = clamp(this.p[2] + 0.1 * steps * (hi[2] - lo[2]), lo[2], hi[2]);
  }
}

// ----------------------------------------------------------------------------- rendering

class Renderer {
  constructor(session, scene, canvas) {
    this.session = session;
    this.scene = scene;
    this.canvas = canvas;
    this.small = document.createElement('canvas');
  }

  // Colours (n * 3) of the rays, in chunks of scene.chunk rays.
  async colours(rays) {
    const [inO, inD] = this.scene.inputs;
    const out = new Float32Array(3 * rays.n);
    for (let s = 0; s < rays.n; s += this.scene.chunk) {
      const e = Math.min(rays.n, s + this.scene.chunk);
      const whole = s === 0 && e === rays.n;
      const feeds = {
        [inO]: new ort.Tensor('float32', whole ? rays.o : rays.o.slice(3 * s, 3 * e), [e - s, 3]),
        [inD]: new ort.Tensor('float32', whole ? rays.d : rays.d.slice(3 * s, 3 * e), [e - s, 3]),
      };
      const result = await this.session.run(feeds);
      out.set(result[this.scene.output].data, 3 * s);
    }
    return out;
  }

  // Draw the view at pose c2w, coarse (1/scene.coarse per side) or full size; returns its size and time.
  async frame(c2w, coarse) {
    const t0 = performance.now();
    const {H, W, focal} = this.scene;
    const w = coarse ? Math.max(1, Math.round(W / this.scene.coarse)) : W;
    const h = coarse ? Math.max(1, Math.round(H * w / W)) : H;
    const rgb = await this.colours(poseRays(c2w, h, w, focal * w / W));
    const image = new ImageData(w, h);
    for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
      for (let k = 0; k < 3; k++) image.data[j + k] = Math.floor(clamp(rgb[i + k], 0, 1) * 255 + 0.5);
      image.data[j + 3] = 255;
    }
    const ctx = this.canvas.getContext('2d');
    if (coarse) {
      this.small.width = w;
      this.small.height = h;
      this.small.getContext('2d').putImageData(image, 0, 0);
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(this.small, 0, 0, W, H);
    } else {
      ctx.putImageData(image, 0, 0);
    }
    return {ms: performance.now() - t0, width: w, height: h, coarse, threads: wasmThreads()};
  }
}

// Draws the newest requested frame whenever the previous one is done; requests it supersedes resolve null.
class Scheduler {
  constructor(renderer, onFrame) {
    this.renderer = renderer;
    this.onFrame = onFrame;
    this.wanted = null;
    this.busy = false;
  }

  request(c2w, coarse) {
    return new Promise((resolve, reject) => {
      if (this.wanted) this.wanted.resolve(null);
      this.wanted = {c2w, coarse, resolve, reject};
      if (!this.busy) this.pump();
    });
  }

  async pump() {
    this.busy = true;
    while (this.wanted) {
      const job = this.wanted;
      this.wanted = null;
      try {
        const info = await this.renderer.frame(job.c2w, job.coarse);
        this.onFrame(info);
        job.resolve(info);
      } catch (err) {
        job.reject(err);
      }
    }
    this.busy = false;
  }
}

// ----------------------------------------------------------------------------- the page

// The threads onnxruntime-web runs on: numThreads, but one without cross-origin isolation (no SharedArrayBuffer:
// it then falls back to one thread and leaves numThreads as it was set).
const wasmThreads = () => (self.crossOriginIsolated ? ort.env.wasm.numThreads : 1);

function showFrame(info) {
  hook.last = info;
  hook.frames[info.coarse ? 'coarse' : 'full'] += 1;
  const what = info.coarse ? 'moving' : 'still';
  const ms = info.ms > 0 ? info.ms.toFixed(1) : 'n/a';  // (under a virtual clock, e.g. --virtual-time-budget)
  $('timing').textContent = `${ms} ms/frame · ${info.width}×${info.height} (${what}) · wasm ×${info.threads}`;
}

function bindPointer(canvas, controls, scheduler) {
  let last = null;
  let settle = null;
  const still = () => scheduler.request(controls.pose(), false);
  canvas.addEventListener('pointerdown', (ev) => {
    last = [ev.clientX, ev.clientY];
    canvas.setPointerCapture(ev.pointerId);
    canvas.classList.add('dragging');
  });
  canvas.addEventListener('pointermove', (ev) => {
    if (!last) return;
    controls.drag((ev.clientX - last[0]) / canvas.clientWidth, (ev.clientY - last[1]) / canvas.clientHeight);
    last = [ev.clientX, ev.clientY];
    scheduler.request(controls.pose(), true);
  });
  const release = () => {
    if (!last) return;
    last = null;
    canvas.classList.remove('dragging');
    still();
  };
  canvas.addEventListener('pointerup', release);
  canvas.addEventListener('pointercancel', release);
  canvas.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    controls.zoom(Math.sign(ev.deltaY));
    scheduler.request(controls.pose(), true);
    clearTimeout(settle);
    settle = setTimeout(still, 200);
  }, {passive: false});
}

async function start() {
  const params = new URLSearchParams(location.search);
  const scene = await (await fetch('scene.json')).json();
  document.title = `${scene.name} · r2l viewer`;
  $('name').textContent = scene.name;
  ort.env.wasm.wasmPaths = new URL('./', import.meta.url).href;
  if (params.has('threads')) ort.env.wasm.numThreads = Number(params.get('threads'));
  if (params.has('chunk')) scene.chunk = Math.max(1, Number(params.get('chunk')));
  $('status').textContent = 'loading the model';
  const session = await ort.InferenceSession.create('model.onnx', {executionProviders: ['wasm']});
  const canvas = $('view');
  canvas.width = scene.W;
  canvas.height = scene.H;
  canvas.style.setProperty('--aspect', String(scene.W / scene.H));
  const scheduler = new Scheduler(new Renderer(session, scene, canvas), showFrame);
  const controls = new Controls(scene.controls, scene.test_pose);
  Object.assign(hook, {
    scene,
    pose: () => controls.pose(),
    renderPose: (c2w, coarse = false) => scheduler.request(c2w, coarse),
  });
  bindPointer(canvas, controls, scheduler);
  canvas.addEventListener('dblclick', () => {
    controls.reset(scene.test_pose);
    scheduler.request(scene.test_pose, false);
  });
  $('help').textContent = scene.controls.mode === 'orbit'
    ? 'drag to orbit · wheel to move closer or further · double-click to reset'
    : 'drag to move within the capture\'s range · wheel to move forward or back · double-click to reset';
  await scheduler.request(scene.test_pose, false);
  $('status').textContent = '';
}

start().then(() => markReady(true), (err) => {
  hook.error = String(err && err.message ? err.message : err);
  $('status').textContent = `the viewer failed: ${hook.error}`;
  markFailed(err);
});
