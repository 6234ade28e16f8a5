/* labels serve: keyboard navigation, loading the next page of results as the
   person scrolls, the parts a page loads after it is shown (a photo's "more like
   this"), and tiles whose picture fails. No inline script anywhere: the
   Content-Security-Policy allows only this file. Text is only ever handled as
   text (textContent, attributes), never as markup; what is fetched is parsed into
   a document of its own and only its elements are moved over. */
(function () {
  "use strict";
  var box = document.getElementById("q");

  // Every tile of every grid on the page (search results, "more like this", the
  // groups of duplicates), in reading order: the arrow keys move through them all.
  function tiles() {
    return Array.prototype.slice.call(document.querySelectorAll(".grid .tile-link"));
  }

  // The tile in the next or previous row nearest to `from` horizontally.
  function vertical(list, index, step) {
    var here = list[index].getBoundingClientRect();
    var best = -1, bestDistance = Infinity;
    for (var i = index + step; i >= 0 && i < list.length; i += step) {
      var r = list[i].getBoundingClientRect();
      if (Math.abs(r.top - here.top) < 2) { continue; }
      if (best !== -1 && Math.abs(r.top - list[best].getBoundingClientRect().top) >= 2) { break; }
      var d = Math.abs(r.left - here.left);
      if (d < bestDistance) { best = i; bestDistance = d; }
    }
    return best;
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) { return; }
    var target = event.target;
    var typing = target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable;
    if (event.key === "/" && !typing && box) {
      event.preventDefault();
      box.focus();
      box.select();
      return;
    }
    if (target === box && event.key === "ArrowDown") {
      var first = tiles()[0];
      if (first) { event.preventDefault(); first.focus(); }
      return;
    }
    if (event.key === "Escape" && !typing) {
      var back = document.getElementById("back");
      if (back) { back.click(); }
      return;
    }
    if (!target.classList || !target.classList.contains("tile-link")) { return; }
    var list = tiles();
    var index = list.indexOf(target);
    var next = -1;
    if (event.key === "ArrowRight") { next = index + 1; }
    else if (event.key === "ArrowLeft") { next = index - 1; }
    else if (event.key === "ArrowDown") { next = vertical(list, index, 1); }
    else if (event.key === "ArrowUp") {
      next = vertical(list, index, -1);
      if (next === -1 && box) { event.preventDefault(); box.focus(); return; }
    }
    else { return; }
    event.preventDefault();
    if (next >= 0 && next < list.length) {
      list[next].focus();
      list[next].scrollIntoView({block: "nearest"});
    } else if (next >= list.length) {
      loadMore();
    }
  });

  // A thumbnail that cannot be shown (its file gone or changed): the tile says so.
  document.addEventListener("error", function (event) {
    var img = event.target;
    if (img.tagName === "IMG" && img.closest) {
      var tile = img.closest(".tile");
      if (tile) { tile.classList.add("broken"); }
    }
  }, true);

  // The next page of results, appended as the person scrolls to the end.
  var loading = false;
  function loadMore() {
    var more = document.getElementById("more");
    var grid = document.getElementById("results");
    if (!more || !grid || loading) { return; }
    loading = true;
    fetch(more.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) {
        if (!response.ok) { throw new Error(response.status); }
        return response.text();
      })
      .then(function (text) {
        var page = new DOMParser().parseFromString(text, "text/html");
        var added = page.querySelectorAll("#results > .tile");
        for (var i = 0; i < added.length; i++) { grid.appendChild(document.adoptNode(added[i])); }
        var shownTo = document.getElementById("shown-to"), theirs = page.getElementById("shown-to");
        if (shownTo && theirs) { shownTo.textContent = theirs.textContent; }
        var nextMore = page.getElementById("more");
        if (nextMore) { more.href = nextMore.getAttribute("href"); } else { more.parentNode.remove(); }
        loading = false;
        watch();
      })
      .catch(function () { loading = false; });  // the link still works by hand
  }

  // A part of the page fetched after it is shown: an element with data-load="URL"
  // is replaced by the element of the same id in the page at URL (which works as a
  // page of its own, and is what the element links to without script).
  function loadParts() {
    var parts = document.querySelectorAll("[data-load][id]");
    Array.prototype.forEach.call(parts, function (part) {
      part.setAttribute("aria-busy", "true");
      part.classList.add("loading");
      fetch(part.getAttribute("data-load"), {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (response) {
          if (!response.ok) { throw new Error(response.status); }
          return response.text();
        })
        .then(function (text) {
          var found = new DOMParser().parseFromString(text, "text/html").getElementById(part.id);
          if (found) { part.replaceWith(document.adoptNode(found)); }
        })
        .catch(function () {  // the link inside still works by hand
          part.removeAttribute("aria-busy");
          part.classList.remove("loading");
        });
    });
  }
  loadParts();

  var observer = null;
  function watch() {
    var more = document.getElementById("more");
    if (!more || !("IntersectionObserver" in window)) { return; }
    if (observer) { observer.disconnect(); }
    observer = new IntersectionObserver(function (entries) {
      if (entries.some(function (e) { return e.isIntersecting; })) { loadMore(); }
    }, {rootMargin: "600px"});
    observer.observe(more);
  }
  watch();
})();
