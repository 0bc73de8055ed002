// lst-fast site: sortable tables, the gallery, the frame slider and the pair selector. Hand-written and
// dependency-free, so the site opens from file:// with no network and no build step, and every line here
// can be read and checked; the data come from <script> files (walks.js, pairs.js), which file:// allows
// where fetch() of a JSON file is blocked.
"use strict";
var LST = (function () {
  function text(tag, content, cls) {
    var e = document.createElement(tag);
    if (content !== undefined) e.textContent = content;
    if (cls) e.className = cls;
    return e;
  }

  // A number with `digits` decimals, or "n/a" for null (a NaN in the results: the model gave no number).
  function fixed(v, digits) { return v === null ? "n/a" : v.toFixed(digits); }

  // Compare rows by the number at `key`, ascending (sign 1) or descending (-1); null always last.
  function byNumber(key, sign) {
    return function (a, b) {
      var x = a[key], y = b[key];
      if (x === null || y === null) return (x === null) - (y === null);
      return sign * (x - y);
    };
  }

  // Click (or Enter/Space on) a header's button: sort the rows by that column, again to reverse.
  function sortTables() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("thead th button").forEach(function (button) {
        button.addEventListener("click", function () {
          var th = button.parentNode;
          var column = Array.prototype.indexOf.call(th.parentNode.children, th);
          var numeric = button.dataset.type === "number";
          var descending = th.getAttribute("aria-sort") === "ascending";
          table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
          th.setAttribute("aria-sort", descending ? "descending" : "ascending");
          var body = table.tBodies[0];
          var rows = Array.prototype.slice.call(body.rows);
          rows.sort(function (a, b) {
            var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
            var c;
            if (numeric) {
              x = x === "" ? Infinity : parseFloat(x);
              y = y === "" ? Infinity : parseFloat(y);
              c = x - y;
            } else {
              c = x.localeCompare(y);
            }
            return descending ? -c : c;
          });
          rows.forEach(function (r) { body.appendChild(r); });
        });
      });
    });
  }

  // The gallery: filter, order and page the rows of walks.js; only one page of images is in the page.
  function gallery(data) {
    var PAGE = 48;
    var R = 0, POS = 1, SRC = 2, TGT = 3, SC = 4, TC = 5, P0 = 6, P = 7, RMS = 8, STRIKING = 9, OWN = 10, PT = 11;
    var el = function (id) { return document.getElementById(id); };
    var page = 0, shown = [];
    var orders = {
      striking: byNumber(STRIKING, -1),
      rms: byNumber(RMS, 1),
      p: byNumber(P, -1),
      walk: function (a, b) { return a[R] - b[R] || a[POS] - b[POS]; }
    };
    function image(src, what, w, p) {
      var fig = text("figure");
      var img = document.createElement("img");
      img.src = src;
      img.loading = "lazy";
      img.alt = data.model + ": " + what + " (" + w[SC] + " source walked toward the " + w[TC] + " target), " +
        w[SC] + " confidence " + fixed(p, 3);
      fig.appendChild(img);
      fig.appendChild(text("figcaption", what + " p=" + fixed(p, 3)));
      return fig;
    }
    function card(w) {
      var name = w[R] + "-" + w[POS];
      var box = text("article", undefined, "card");
      var head = text("h3", w[SC] + " → " + w[TC] + " (round " + w[R] + ", #" + w[SRC] + ")");
      box.appendChild(head);
      var row = text("div", undefined, "triple");
      row.appendChild(image("img/d" + w[SRC] + "." + data.ext, "source", w, w[P0]));
      row.appendChild(image("img/o" + name + "." + data.ext, "LST output", w, w[P]));
      row.appendChild(image("img/d" + w[TGT] + "." + data.ext, "target", w, w[PT]));
      box.appendChild(row);
      var foot = text("p", "RMS to target " + fixed(w[RMS], 3) + ", striking " + fixed(w[STRIKING], 3) + " ");
      if (w[OWN]) {
        var a = text("a", "▸ the walk");
        a.href = "walks/" + name + ".html";
        foot.appendChild(a);
      }
      box.appendChild(foot);
      return box;
    }
    function draw() {
      var pages = Math.max(1, Math.ceil(shown.length / PAGE));
      page = Math.min(Math.max(page, 0), pages - 1);
      var box = el("gallery");
      box.textContent = "";
      shown.slice(page * PAGE, (page + 1) * PAGE).forEach(function (w) { box.appendChild(card(w)); });
      el("page").textContent = "page " + (page + 1) + " of " + pages;
      el("prev").disabled = page === 0;
      el("next").disabled = page >= pages - 1;
    }
    function update() {
      var s = el("filter-source").value, t = el("filter-target").value;
      shown = data.walks.filter(function (w) { return (!s || w[SC] === s) && (!t || w[TC] === t); });
      shown.sort(orders[el("sort").value]);
      el("count").textContent = shown.length + " of " + data.walks.length + " walks";
      page = 0;
      draw();
    }
    ["filter-source", "filter-target", "sort"].forEach(function (id) { el(id).addEventListener("change", update); });
    el("prev").addEventListener("click", function () { page -= 1; draw(); });
    el("next").addEventListener("click", function () { page += 1; draw(); });
    update();
  }

  // The walk page's slider: each position one recorded frame (arrow keys move it too).
  function slider() {
    var box = document.querySelector(".frames");
    var frames = JSON.parse(box.dataset.frames);
    var input = document.getElementById("slider"), img = document.getElementById("frame");
    var label = document.getElementById("frame-label");
    function show() {
      var f = frames[parseInt(input.value, 10)];
      img.src = f.src;
      img.alt = box.dataset.model + ": iteration " + f.iteration + " of the walk from a " + box.dataset.sourceClass +
        " toward a " + box.dataset.targetClass + ", " + box.dataset.sourceClass + " confidence " + fixed(f.p, 3);
      label.textContent = "iteration " + f.iteration + ", p = " + fixed(f.p, 4);
    }
    input.addEventListener("input", show);
    input.addEventListener("change", show);
  }

  // The side-by-side page: the selector (arrow keys, or the buttons) picks the pair every model shows.
  function pairs(data) {
    var select = document.getElementById("pair");
    data.pairs.forEach(function (p, k) {
      var o = document.createElement("option");
      o.value = k;
      o.textContent = "round " + p[0] + ", source #" + p[2] + ": " + p[4] + " → " + p[5];
      select.appendChild(o);
    });
    function show() {
      var p = data.pairs[parseInt(select.value, 10)];
      var src = document.getElementById("pair-source"), tgt = document.getElementById("pair-target");
      src.src = "models/" + data.first + "/img/d" + p[2] + "." + data.ext[0];
      src.alt = "source, class " + p[4];
      tgt.src = "models/" + data.first + "/img/d" + p[3] + "." + data.ext[0];
      tgt.alt = "target, class " + p[5];
      document.getElementById("pair-source-class").textContent = p[4];
      document.getElementById("pair-target-class").textContent = p[5];
      var ps = document.querySelectorAll(".pair-p");
      document.querySelectorAll(".pair-output").forEach(function (img, k) {
        img.src = "models/" + img.dataset.slug + "/img/o" + p[0] + "-" + p[1] + "." + img.dataset.ext;
        img.alt = data.models[k] + ": LST output (" + p[4] + " source walked toward the " + p[5] + " target), " +
          p[4] + " confidence " + fixed(p[6][k][1], 3);
        ps[k].textContent = fixed(p[6][k][1], 4);
        var list = img.parentNode.querySelector(".verdicts");  // every model's class and confidence
        if (list && p[6][k][2]) {
          p[6][k][2].forEach(function (v, j) {
            list.children[j].textContent = data.models[j] + ": " + v[0] + " " + fixed(v[1], 3);
          });
        }
      });
    }
    function step(d) {
      select.value = Math.min(Math.max(parseInt(select.value, 10) + d, 0), data.pairs.length - 1);
      show();
    }
    select.addEventListener("change", show);
    document.getElementById("pair-prev").addEventListener("click", function () { step(-1); });
    document.getElementById("pair-next").addEventListener("click", function () { step(1); });
  }

  document.addEventListener("DOMContentLoaded", sortTables);
  return { gallery: gallery, slider: slider, pairs: pairs };
})();
