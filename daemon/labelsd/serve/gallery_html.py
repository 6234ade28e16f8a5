"""The fixed parts of the HTML contact sheet (gallery.render_html): its
Content-Security-Policy, style sheet and filter script. Kept apart so that
gallery.py reads as Python."""

# Nothing but the page itself: thumbnails are data: URIs, style and script inline.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")

STYLE = """
body { font: 14px/1.35 system-ui, sans-serif; margin: 16px; color: #141414; background: #fff; }
header { margin-bottom: 12px; }
h1 { font-size: 18px; margin: 0 0 4px; }
.note { color: #6e6e6e; margin: 0 0 8px; }
#filter { font: inherit; padding: 4px 8px; width: 20em; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
figure { margin: 0; }
figure img, .placeholder { display: block; width: 100%; height: auto; aspect-ratio: 1;
  object-fit: contain;
  background: #e8e8e8; }
.placeholder { display: flex; align-items: center; justify-content: center; text-align: center;
  background: #fae2e2; color: #961e1e; border: 1px solid #961e1e; box-sizing: border-box; }
figcaption { font-size: 13px; margin-top: 4px; overflow-wrap: anywhere; }
figcaption .name { font-weight: 600; }
figcaption ol { margin: 2px 0; padding-left: 1.4em; }
figcaption .tags { color: #6e6e6e; }
figure[hidden] { display: none; }
"""

# Filters figures by the words typed (every word must occur in the figure's
# name, labels or tags); page.html#tabby opens with the box filled in. Reads
# and writes text only through dataset/value/textContent, never as markup.
SCRIPT = """
(function () {
  var box = document.getElementById("filter");
  var shown = document.getElementById("shown");
  var figures = Array.prototype.slice.call(document.querySelectorAll("main figure"));
  function apply() {
    var words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var count = 0;
    figures.forEach(function (f) {
      var text = f.dataset.search;
      var keep = words.every(function (w) { return text.indexOf(w) !== -1; });
      f.hidden = !keep;
      if (keep) { count += 1; }
    });
    shown.textContent = count + " of " + figures.length + " shown";
  }
  if (location.hash.length > 1) {
    try { box.value = decodeURIComponent(location.hash.slice(1)); } catch (e) {}
  }
  box.addEventListener("input", apply);
  apply();
})();
"""
