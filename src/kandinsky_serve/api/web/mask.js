// Painting an inpaint mask over an image with mouse, pen or finger.
//
// Two stacked canvases at the image's own resolution: the image below, the strokes above (shown
// see-through by CSS). The mask sent to the server is made from the strokes: white = repaint.

const STROKE = "rgb(255, 64, 160)"; // any opaque colour; only where it is painted matters
const MAX_SIDE = 2048;

export class MaskPainter {
  constructor(base, overlay, stage) {
    this.base = base;
    this.overlay = overlay;
    this.stage = stage;
    this.brush = 32; // in screen pixels, so the brush feels the same on a phone and a desktop
    this.painted = false;
    this.last = null;
    overlay.addEventListener("pointerdown", (e) => this.down(e));
    overlay.addEventListener("pointermove", (e) => this.move(e));
    for (const name of ["pointerup", "pointercancel", "pointerleave"]) {
      overlay.addEventListener(name, () => (this.last = null));
    }
  }

  // Shows a new image and clears the mask. A phone photo is scaled down to the largest side the
  // server generates, so the upload stays small.
  load(image) {
    const fit = Math.min(1, MAX_SIDE / Math.max(image.naturalWidth, image.naturalHeight));
    const width = Math.round(image.naturalWidth * fit);
    const height = Math.round(image.naturalHeight * fit);
    for (const canvas of [this.base, this.overlay]) {
      canvas.width = width;
      canvas.height = height;
    }
    this.base.getContext("2d").drawImage(image, 0, 0, width, height);
    this.stage.style.aspectRatio = `${width} / ${height}`;
    this.stage.hidden = false;
    this.clear();
  }

  get loaded() {
    return !this.stage.hidden && this.base.width > 0;
  }

  clear() {
    this.overlay.getContext("2d").clearRect(0, 0, this.overlay.width, this.overlay.height);
    this.painted = false;
  }

  // Screen position to canvas pixels (the canvas is scaled to fit the panel).
  point(event) {
    const box = this.overlay.getBoundingClientRect();
    const scale = this.overlay.width / box.width;
    return { x: (event.clientX - box.left) * scale, y: (event.clientY - box.top) * scale, scale };
  }

  down(event) {
    event.preventDefault();
    this.overlay.setPointerCapture(event.pointerId);
    this.last = this.point(event);
    this.stroke(this.last, this.last);
  }

  move(event) {
    if (!this.last) return;
    const next = this.point(event);
    this.stroke(this.last, next);
    this.last = next;
  }

  stroke(from, to) {
    const ctx = this.overlay.getContext("2d");
    ctx.strokeStyle = STROKE;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = this.brush * to.scale;
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
    this.painted = true;
  }

  // The image and its black-and-white mask, as PNG base64, at the same size.
  export() {
    const { width, height } = this.overlay;
    const white = document.createElement("canvas");
    white.width = width;
    white.height = height;
    const w = white.getContext("2d");
    w.drawImage(this.overlay, 0, 0);
    w.globalCompositeOperation = "source-in"; // keeps the painted shape, turns it white
    w.fillStyle = "#fff";
    w.fillRect(0, 0, width, height);

    const mask = document.createElement("canvas");
    mask.width = width;
    mask.height = height;
    const m = mask.getContext("2d");
    m.fillStyle = "#000";
    m.fillRect(0, 0, width, height);
    m.drawImage(white, 0, 0);
    return { image: pngBase64(this.base), mask: pngBase64(mask) };
  }
}

function pngBase64(canvas) {
  return canvas.toDataURL("image/png").split(",", 2)[1];
}
