// sockscope report --html: hover details, zoom, "only leaks". Everything the page
// shows is in its HTML already (with `title` tooltips where this script does not run);
// this script only moves those tooltips into a faster popover and never parses HTML.
"use strict";
(function () {
  var pop = document.getElementById("pop");
  var tl = document.getElementById("tl");
  var scroller = document.getElementById("tl-scroll");
  if (!pop) {
    return;
  }
  var timeline = document.getElementById("timeline");
  if (timeline) {
    timeline.querySelectorAll("[title]").forEach(function (el) {
      el.setAttribute("data-tip", el.getAttribute("title"));
      el.removeAttribute("title");
    });
  }
  var current = null;
  function hide() {
    current = null;
    pop.hidden = true;
  }
  function place(x, y) {
    var w = pop.offsetWidth;
    var h = pop.offsetHeight;
    var left = x + 16;
    var top = y + 16;
    if (left + w > window.innerWidth - 8) {
      left = Math.max(8, x - w - 16);
    }
    if (top + h > window.innerHeight - 8) {
      top = Math.max(8, y - h - 16);
    }
    pop.style.left = left + "px";
    pop.style.top = top + "px";
  }
  function show(el, x, y) {
    if (el !== current) {
      current = el;
      pop.textContent = el.getAttribute("data-tip");
      pop.hidden = false;
    }
    place(x, y);
  }
  document.addEventListener("mousemove", function (ev) {
    var el = ev.target instanceof Element ? ev.target.closest("[data-tip]") : null;
    if (el) {
      show(el, ev.clientX, ev.clientY);
    } else if (current) {
      hide();
    }
  });
  document.addEventListener("focusin", function (ev) {
    var el = ev.target instanceof Element ? ev.target.closest("[data-tip]") : null;
    if (el) {
      var r = el.getBoundingClientRect();
      show(el, r.left, r.bottom);
    }
  });
  document.addEventListener("focusout", hide);
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") {
      hide();
    }
  });
  if (scroller) {
    scroller.addEventListener("scroll", hide, { passive: true });
  }

  // The time axis at a zoom: round steps (1, 2, 5 times a power of ten) giving 4 to
  // 10 ticks per screen width, as the page was written with for zoom 1.
  function tickStep(span) {
    var target = Math.max(span / 10, 1);
    for (var base = 1000; ; base *= 10) {
      for (var m of [1, 2, 5]) {
        if (base * m >= target) {
          return base * m;
        }
      }
    }
  }
  function drawAxis(zoom) {
    var span = Number(tl.getAttribute("data-span-ns"));
    var axis = tl.querySelector(".axis .trk");
    if (!(span > 0) || !axis) {
      return;
    }
    var step = tickStep(span / zoom);
    var decimals = step >= 1e9 ? 0 : Math.min(6, 9 - Math.floor(Math.log10(step) + 1e-9));
    tl.style.setProperty("--step", (step * 100) / span + "%");
    axis.textContent = "";
    for (var k = 0; k * step <= span; k++) {
      var t = document.createElement("span");
      t.className = "t" + (k === 0 ? " first" : k * step > span * 0.97 ? " last" : "");
      t.style.left = (k * step * 100) / span + "%";
      t.textContent = ((k * step) / 1e9).toFixed(decimals) + " s";
      axis.appendChild(t);
    }
  }

  // Zoom: widen the tracks, keeping the time at the middle of the view in place.
  document.querySelectorAll("button[data-zoom]").forEach(function (b) {
    b.addEventListener("click", function () {
      if (!tl || !scroller) {
        return;
      }
      var mid = (scroller.scrollLeft + scroller.clientWidth / 2) / scroller.scrollWidth;
      var zoom = Number(b.getAttribute("data-zoom")) || 1;
      tl.style.setProperty("--zoom", String(zoom));
      drawAxis(zoom);
      scroller.scrollLeft = mid * scroller.scrollWidth - scroller.clientWidth / 2;
      document.querySelectorAll("button[data-zoom]").forEach(function (o) {
        o.setAttribute("aria-pressed", o === b ? "true" : "false");
      });
    });
  });
  var only = document.getElementById("only-leaks");
  if (only && tl) {
    only.addEventListener("change", function () {
      tl.classList.toggle("only-leaks", only.checked);
    });
  }
})();
